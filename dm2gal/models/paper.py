"""The dm2gal paper's centre-voxel CNN: a 65^3 crop of the input fields -> one output voxel."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dm2gal.models.base import FieldNet
from dm2gal.models.conditioning import block_styles, build_film, modulate

# (kernel, stride, output-channel multiple of ``channels``) of each Conv3d+BatchNorm3d+ReLU block
_LAYERS = (
    (7, 1, 1),
    (7, 1, 1),
    (3, 2, 2),
    (5, 1, 2),
    (5, 1, 2),
    (3, 2, 4),
    (3, 1, 4),
    (3, 1, 4),
    (3, 2, 8),
)
_INPUT_SIDE = 65  # 65 -> 59 -> 53 -> 26 -> 22 -> 18 -> 8 -> 6 -> 4 -> 1
_BLOCK = 3  # modules per block in ``features``: Conv3d, BatchNorm3d, ReLU


class PaperNet(FieldNet):
    """Conv3d+BatchNorm3d+ReLU blocks, no padding and no residuals, with kernels
    7,7 | 3/s2 | 5,5 | 3/s2 | 3,3 | 3/s2 and channels ch -> 2ch -> 4ch -> 8ch (doubling at each
    stride-2 block), then FC 8ch -> 256 -> out. Input ``(B, in, 65, 65, 65)``, output
    ``(B, out, 1, 1, 1)``: the prediction for the centre voxel (context 32, fixed output 1).
    ``channels=64`` has 13,865,601 parameters, as in the paper.
    ``conditioning="film"``: the universe ``parameters`` (names) modulate every block's output
    (:mod:`dm2gal.models.conditioning`); ``forward`` then takes them."""

    fixed_output = 1
    context = (_INPUT_SIDE - 1) // 2

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: int = 64,
        conditioning: str = "none",
        parameters: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c_in = in_channels
        for kernel, stride, mult in _LAYERS:
            c_out = mult * channels
            layers += [
                nn.Conv3d(c_in, c_out, kernel, stride=stride),
                nn.BatchNorm3d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in, 256), nn.ReLU(inplace=True), nn.Linear(256, out_channels)
        )
        film = build_film(conditioning, parameters, [m * channels for _, _, m in _LAYERS])
        if film is not None:
            self.film = film

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        styles = block_styles(self.film, params, type(self).__name__)
        # blocks as slices of ``features``: the parameter names of unconditioned checkpoints
        for start in range(0, len(self.features), _BLOCK):
            x = modulate(self.features[start : start + _BLOCK](x), next(styles))
        return self.head(x)[:, :, None, None, None]
