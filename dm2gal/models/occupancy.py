"""Networks whose output describes an occupancy ("does this voxel hold a galaxy") and an
occupied voxel's stellar mass: the trunk and head shape shared by the two-phase and the
probabilistic networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dm2gal.errors import ConfigError
from dm2gal.models.unet3d import UNet3d


class OccupancyNet(UNet3d):
    """A :class:`UNet3d` trunk whose 1^3 head gives ``1 + value_channels`` channels: channel 0
    the logit of "this voxel holds a galaxy" (raw stellar mass > 0), the others describe the
    normalised target of an occupied voxel (their meaning is the subclass's).

    ``out_channels`` counts predicted target channels and must be 1; the other arguments are
    those of :class:`UNet3d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        value_channels: int,
        channels: int,
        levels: int,
        convs: int,
        conditioning: str = "none",
        parameters: Sequence[str] | None = None,
    ) -> None:
        if out_channels != 1:
            raise ConfigError(
                f"model.out_channels ({type(self).__name__}): must be 1, got {out_channels}"
            )
        super().__init__(
            in_channels, 1 + value_channels, channels, levels, convs, conditioning, parameters
        )

    @staticmethod
    def split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logit, values)`` of a raw output ``(B, 1 + V, n, n, n)``: ``(B, 1, ...)`` and
        ``(B, V, ...)``."""
        return output[:, :1], output[:, 1:]
