"""A residual 3D CNN with unpadded convolutions: field in, field out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dm2gal.errors import ConfigError
from dm2gal.models.base import FieldNet, center_crop
from dm2gal.models.conditioning import block_styles, build_film, modulate
from dm2gal.models.unet3d import conv_stack


class _ResBlock(nn.Module):
    """Standard (post-activation) residual block: two unpadded 3^3 Conv3d+BatchNorm3d, the
    centre-cropped input added before the last LeakyReLU; shrinks each side by 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_stack(channels, channels, 1),
            nn.Conv3d(channels, channels, 3, bias=False),
            nn.BatchNorm3d(channels),
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y + center_crop(x, y.shape[-1]))


class ResNet3d(FieldNet):
    """A 3^3 stem convolution to ``channels``, ``blocks`` residual blocks, a 1^3 head to
    ``out_channels``. Context ``1 + 2 * blocks`` voxels; any output side >= 1.
    ``conditioning="film"``: the universe ``parameters`` (names) modulate the stem's and every
    block's output (:mod:`dm2gal.models.conditioning`); ``forward`` then takes them."""

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: int = 32,
        blocks: int = 4,
        conditioning: str = "none",
        parameters: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if channels < 1 or blocks < 0:
            raise ConfigError(
                f"model.channels, model.blocks (ResNet3d): need channels >= 1, blocks >= 0; "
                f"got {channels}, {blocks}"
            )
        self.in_channels = in_channels
        self.context = 1 + 2 * blocks
        self.stem = conv_stack(in_channels, channels, 1)
        self.blocks = nn.Sequential(*(_ResBlock(channels) for _ in range(blocks)))
        self.head = nn.Conv3d(channels, out_channels, 1)
        film = build_film(conditioning, parameters, [channels] * (1 + blocks))
        if film is not None:
            self.film = film

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        styles = block_styles(self.film, params, type(self).__name__)
        x = modulate(self.stem(x), next(styles))
        for block in self.blocks:
            x = modulate(block(x), next(styles))
        return self.head(x)
