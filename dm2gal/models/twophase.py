"""Two-phase network (after Yip et al. / Zhang et al. 2019): occupancy and value heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dm2gal.models.occupancy import OccupancyNet


class TwoPhaseNet(OccupancyNet):
    """An :class:`OccupancyNet` with one value channel: channel 0 the occupancy logit, channel 1
    the normalised target of an occupied voxel. ``forward`` returns both (for
    :class:`dm2gal.train.losses.TwoPhaseLoss`); ``infer`` returns one channel: the value where
    ``sigmoid(logit) >= 0.5`` and ``empty_value`` elsewhere.

    ``empty_value`` is the normalised target of an empty voxel (raw stellar mass 0), which the
    data config's transform defines; ``out_channels`` counts predicted target channels and must
    be 1. The other arguments are those of :class:`dm2gal.models.UNet3d` (``conditioning``,
    ``parameters``: FiLM of the UNet trunk)."""

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: int = 16,
        levels: int = 2,
        convs: int = 2,
        empty_value: float = 0.0,
        conditioning: str = "none",
        parameters: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, 1, channels, levels, convs, conditioning, parameters
        )
        self.empty_value = float(empty_value)

    def infer(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        logit, value = self.split(self(x, params))
        return torch.where(logit >= 0, value, torch.full_like(value, self.empty_value))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, empty_value={self.empty_value}"
