"""What every network declares, so that crops, padding and tiling derive from it."""

from __future__ import annotations

import torch
from torch import nn


class FieldNet(nn.Module):
    """A network from ``(B, C_in, n + 2c, ...)`` input crops to ``(B, C_out, n, ...)`` output.

    Subclasses set ``context`` (input voxels needed on each side of the output, ``c``) and,
    for networks with one fixed output size (the paper's centre-voxel CNN), ``fixed_output``.
    ``period`` is the shift (voxels) the network is equivariant to: 1 for plain convolutions,
    ``2**levels`` for a UNet; crops and tiles placed at multiples of it see identical phases.
    Convolutions are unpadded: boundaries come from periodic padding of the data, never zeros.
    """

    context: int = 0
    fixed_output: int | None = None
    in_channels: int | None = None
    period: int = 1

    @property
    def film(self) -> nn.Module | None:
        """The parameter conditioning (:class:`dm2gal.models.conditioning.FiLM`), if any: the
        submodule ``film`` a conditioned network registers."""
        return self._modules.get("film")

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the universe parameters the network is conditioned on (none: empty)."""
        return () if self.film is None else self.film.names

    def valid_output(self, size: int) -> bool:
        """Whether an output crop of side ``size`` voxels is possible."""
        return size >= 1 and (self.fixed_output is None or size == self.fixed_output)

    def output_rule(self) -> str:
        """Which output sides are possible, in words (for error messages)."""
        return "any side >= 1" if self.fixed_output is None else f"only side {self.fixed_output}"

    def check_input(self, x: torch.Tensor) -> int:
        """Return the output side ``n`` for input ``x`` of shape ``(B, C_in, n + 2c, n + 2c,
        n + 2c)``; raise ``ValueError`` naming the network and what it expected otherwise."""
        name = type(self).__name__
        if x.ndim != 5 or len(set(x.shape[2:])) != 1:
            raise ValueError(f"{name}: expected input (B, C, s, s, s), got {tuple(x.shape)}")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name}: expected {self.in_channels} input channels, got {tuple(x.shape)}"
            )
        n = x.shape[2] - 2 * self.context
        if not self.valid_output(n):
            raise ValueError(
                f"{name}: input side {x.shape[2]} gives output side {n} (context "
                f"{self.context} each side); possible output sides: {self.output_rule()}"
            )
        return n

    def infer(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Return the prediction of the (normalised) target; ``forward`` gives the raw output
        that the loss sees (they differ for multi-head networks such as the two-phase one).
        ``params`` ``(B, P)``: the universe parameters of a conditioned network."""
        return self(x) if params is None else self(x, params)

    def extra_repr(self) -> str:
        return f"context={self.context}, fixed_output={self.fixed_output}"


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """The central ``side^3`` voxels of ``x`` of shape ``(B, C, s, s, s)``; ``s - side`` must be
    even and non-negative."""
    cut, odd = divmod(x.shape[-1] - side, 2)
    if cut < 0 or odd:
        raise ValueError(f"cannot centre-crop side {x.shape[-1]} to side {side}")
    if cut == 0:
        return x
    return x[..., cut:-cut, cut:-cut, cut:-cut]
