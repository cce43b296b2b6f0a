"""A map2map-style 3D UNet with unpadded convolutions: field in, field out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dm2gal.errors import integer_option
from dm2gal.models.base import FieldNet, center_crop
from dm2gal.models.conditioning import block_styles, build_film, modulate


def conv_stack(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    """``convs`` unpadded 3^3 Conv3d+BatchNorm3d+LeakyReLU layers (each side loses ``convs``)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, bias=False),
            nn.BatchNorm3d(c_out),
            nn.LeakyReLU(0.2, inplace=True),
        ]
    return nn.Sequential(*layers)


def _resample(conv: type[nn.Module], channels: int) -> nn.Sequential:
    """Stride-2 2^3 (transposed) convolution + BatchNorm3d + LeakyReLU: halves (doubles) sides."""
    return nn.Sequential(
        conv(channels, channels, 2, stride=2, bias=False),
        nn.BatchNorm3d(channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


class UNet3d(FieldNet):
    """UNet of constant width ``channels`` with ``levels`` down-samplings (stride-2 2^3 convs) and
    as many up-samplings (stride-2 2^3 transposed convs); each level runs ``convs`` unpadded
    3^3 convolutions on the way down and on the way up (after concatenating the centre-cropped
    skip), the bottom runs ``convs`` more, and a 1^3 convolution maps to ``out_channels``.

    Only output sides ``n`` whose every down-sampled size is even are possible
    (``valid_output``); they repeat with ``period = 2**levels``, which is also the shift the
    output is equivariant to. ``levels=2, convs=2`` has context 20 and takes output sides that
    are multiples of 4.

    ``conditioning="film"``: the universe ``parameters`` (names) modulate the output of every
    encoder, the bottom and every decoder (:mod:`dm2gal.models.conditioning`); ``forward``
    then takes them as ``(B, P)``."""

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: int = 16,
        levels: int = 2,
        convs: int = 2,
        conditioning: str = "none",
        parameters: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        channels, levels, convs = (
            integer_option(value, f"model.{key}", 1)
            for key, value in (("channels", channels), ("levels", levels), ("convs", convs))
        )
        self.in_channels = in_channels
        self.levels, self.convs = levels, convs
        self.encoders = nn.ModuleList(
            conv_stack(in_channels if i == 0 else channels, channels, convs) for i in range(levels)
        )
        self.downs = nn.ModuleList(_resample(nn.Conv3d, channels) for _ in range(levels))
        self.bottom = conv_stack(channels, channels, convs)
        self.ups = nn.ModuleList(_resample(nn.ConvTranspose3d, channels) for _ in range(levels))
        self.decoders = nn.ModuleList(
            conv_stack(2 * channels, channels, convs) for _ in range(levels)
        )
        self.head = nn.Conv3d(channels, out_channels, 1)
        self.period = 2**levels
        first = next(n for n in range(1, self.period + 1) if self.input_side(n) is not None)
        self.context = (self.input_side(first) - first) // 2
        self._first = first
        film = build_film(conditioning, parameters, [channels] * (2 * levels + 1))
        if film is not None:
            self.film = film

    def input_side(self, n: int) -> int | None:
        """Input side needed for output side ``n``, or None when ``n`` is impossible."""
        if n < 1:
            return None
        side = n
        for _ in range(self.levels):  # decoder inputs are up-sampled: their sides must be even
            side += 2 * self.convs
            if side % 2:
                return None
            side //= 2
        side += 2 * self.convs  # bottom input
        for _ in range(self.levels):  # encoder outputs are down-sampled by exactly 2
            side = 2 * side + 2 * self.convs
        return side

    def valid_output(self, size: int) -> bool:
        return self.input_side(size) is not None

    def output_rule(self) -> str:
        return f"n >= 1 with n % {self.period} == {self._first % self.period}"

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        styles = block_styles(self.film, params, type(self).__name__)
        skips = []
        for encode, down in zip(self.encoders, self.downs, strict=True):
            x = modulate(encode(x), next(styles))
            skips.append(x)
            x = down(x)
        x = modulate(self.bottom(x), next(styles))
        for up, decode, skip in zip(self.ups[::-1], self.decoders[::-1], skips[::-1], strict=True):
            x = up(x)
            x = decode(torch.cat([center_crop(skip, x.shape[-1]), x], dim=1))
            x = modulate(x, next(styles))
        return self.head(x)
