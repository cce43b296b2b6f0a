"""Periodic sub-cubes of the grid (held-out regions) and the train/held-out test on positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """An axis-aligned block of voxels ``[start, start + size)`` per axis, periodic in ``grid``."""

    start: tuple[int, int, int]
    size: tuple[int, int, int]
    grid: int

    def __post_init__(self) -> None:
        if len(self.start) != 3 or len(self.size) != 3:
            raise ValueError(f"region start and size need 3 entries, got {self.start}, {self.size}")
        if any(s < 1 or s > self.grid for s in self.size):
            raise ValueError(f"region size {self.size} must be within 1..grid={self.grid}")

    def indices(self, axis: int, pad: int = 0) -> np.ndarray:
        """Voxel indices along ``axis`` (wrapped), widened by ``pad`` on each side."""
        a = self.start[axis]
        return np.arange(a - pad, a + self.size[axis] + pad) % self.grid

    def voxel_mask(self, pad: int = 0) -> np.ndarray:
        """Boolean ``grid^3`` mask of the region widened by ``pad`` voxels on each side."""
        axes = []
        for ax in range(3):
            m = np.zeros(self.grid, dtype=bool)
            if self.size[ax] + 2 * pad >= self.grid:
                m[:] = True
            else:
                m[self.indices(ax, pad)] = True
            axes.append(m)
        return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]

    def contains(self, pos: np.ndarray, box: float, pad: int = 0) -> np.ndarray:
        """Whether each ``(n, 3)`` position (Mpc/h) lies in the region widened by ``pad`` voxels."""
        idx = np.floor(np.mod(pos, box) / box * self.grid).astype(np.int64) % self.grid
        inside = np.ones(len(idx), dtype=bool)
        for ax in range(3):
            if self.size[ax] + 2 * pad >= self.grid:
                continue
            inside &= (idx[:, ax] - (self.start[ax] - pad)) % self.grid < self.size[ax] + 2 * pad
        return inside
