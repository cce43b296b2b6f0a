"""Two-phase network (after Yip et al. / Zhang et al. 2019): occupancy and value heads."""

from __future__ import annotations

import torch

from dm2gal.models.unet3d import UNet3d


class TwoPhaseNet(UNet3d):
    """A :class:`UNet3d` trunk whose 1^3 head gives two channels: channel 0 the logit of "this
    voxel holds a galaxy", channel 1 the normalised target of an occupied voxel. ``forward``
    returns both (for :class:`dm2gal.train.losses.TwoPhaseLoss`); ``infer`` returns one channel: the
    value where ``sigmoid(logit) >= 0.5`` and ``empty_value`` elsewhere.

    ``empty_value`` is the normalised target of an empty voxel (raw stellar mass 0), which the
    data config's transform defines; ``out_channels`` counts predicted target channels and must
    be 1. The other arguments are those of :class:`UNet3d`."""

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: int = 16,
        levels: int = 2,
        convs: int = 2,
        empty_value: float = 0.0,
    ) -> None:
        if out_channels != 1:
            raise ValueError(f"TwoPhaseNet: out_channels must be 1, got {out_channels}")
        super().__init__(in_channels, 2, channels, levels, convs)
        self.empty_value = float(empty_value)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        logit, value = self(x).split(1, dim=1)
        return torch.where(logit >= 0, value, torch.full_like(value, self.empty_value))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, empty_value={self.empty_value}"
