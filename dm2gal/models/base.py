"""What every network declares, so that crops, padding and tiling derive from it."""

from __future__ import annotations

import torch
from torch import nn


class FieldNet(nn.Module):
    """A network from ``(B, C_in, n + 2c, ...)`` input crops to ``(B, C_out, n, ...)`` output.

    Subclasses set ``context`` (input voxels needed on each side of the output, ``c``) and,
    for networks with one fixed output size (the paper's centre-voxel CNN), ``fixed_output``.
    Convolutions are unpadded: boundaries come from periodic padding of the data, never zeros.
    """

    context: int = 0
    fixed_output: int | None = None

    def valid_output(self, size: int) -> bool:
        """Whether an output crop of side ``size`` voxels is possible."""
        return size >= 1 and (self.fixed_output is None or size == self.fixed_output)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Return the prediction of the (normalised) target; ``forward`` gives the raw output
        that the loss sees (they differ for multi-head networks such as the two-phase one)."""
        return self(x)

    def extra_repr(self) -> str:
        return f"context={self.context}, fixed_output={self.fixed_output}"


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
