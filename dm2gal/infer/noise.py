"""Uniform noise fixed per voxel by a seed: what a draw of a probabilistic network uses.

The noise of voxel ``(x, y, z)`` of a ``grid^3`` box depends only on ``(seed, x, y, z)``: each
``(x, y)`` row of the box has its own ``torch.Generator``, seeded by a hash of ``(seed, x, y)``,
which draws the row's ``channels x grid`` numbers. A draw is therefore the same whether a volume
is predicted whole or tile by tile, in any tile size, batch size or order, and a sub-region's
draw is the corresponding part of the whole box's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One step of the splitmix64 mixer (a bijection of 64-bit integers)."""
    z = (value + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def row_seed(seed: int, x: int, y: int) -> int:
    """The generator seed (63 bits) of row ``(x, y)`` for draw ``seed``."""
    return _splitmix64(_splitmix64(_splitmix64(seed & MASK64) ^ x) ^ y) >> 1


def voxel_noise(
    seed: int, start: Sequence[int], shape: Sequence[int], grid: int, channels: int = 3
) -> torch.Tensor:
    """Uniform noise in ``[0, 1)``, float64, ``(channels, *shape)``, of the box
    ``[start, start + shape)`` of a periodic ``grid^3`` box (starts may be negative or past
    ``grid``: they wrap)."""
    sx, sy, sz = (int(s) for s in shape)
    z = (int(start[2]) + torch.arange(sz)) % grid
    out = torch.empty((channels, sx, sy, sz), dtype=torch.float64)
    gen = torch.Generator()
    for i in range(sx):
        x = (int(start[0]) + i) % grid
        for j in range(sy):
            gen.manual_seed(row_seed(seed, x, (int(start[1]) + j) % grid))
            out[:, i, j] = torch.rand((channels, grid), generator=gen, dtype=torch.float64)[:, z]
    return out
