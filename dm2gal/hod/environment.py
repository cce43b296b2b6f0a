"""The large-scale environment an environment-aware HOD conditions on: ``log10(1 + delta)`` of
the gravity-only DM mass grid, Gaussian-smoothed on a radius R (Mpc/h), at given positions.

The smoothing is the mock galaxy model's own measurement
(:func:`dm2gal.sim.galaxies.smoothed_density`, FFT + Pylians CIC interpolation), so a
benchmark and the model it is scored against mean the same thing by "environment"; the HOD
chooses R itself on its training region. Several periodic boxes of side ``box`` may stand side
by side along x, as :func:`dm2gal.io.catalog.stack_catalogs` places their catalogues: a position
``x`` belongs to box ``floor(x / box)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dm2gal.errors import ConfigError
from dm2gal.sim.galaxies import log_density_at, smoothed_density

#: the store field holding the gravity-only DM mass (every source writes it, dm2gal.io.sources)
DM_FIELD = "dm"
#: finest voxel the smoothing needs, as a fraction of the radius: coarser grids are block-summed
#: to it (a 2048^3 TNG grid need not be transformed whole to smooth on >= 1 Mpc/h)
VOXEL_PER_RADIUS = 0.25


def coarsened(field: np.ndarray, box: float, radius: float) -> np.ndarray:
    """``field`` block-summed by the largest factor dividing its side that keeps the voxel at
    most ``VOXEL_PER_RADIUS * radius`` Mpc/h (itself when no factor > 1 does)."""
    n = field.shape[0]
    voxel = box / n
    factor = max(
        (f for f in range(1, n + 1) if n % f == 0 and f * voxel <= VOXEL_PER_RADIUS * radius),
        default=1,
    )
    if factor == 1:
        return field
    m = n // factor
    blocks = np.asarray(field, dtype=np.float64).reshape(m, factor, m, factor, m, factor)
    return blocks.sum(axis=(1, 3, 5))


class Environment:
    """``log10(1 + delta_R)`` of one or more boxes' gravity-only DM mass grids.

    Args:
        fields: each box's DM mass per voxel (Msun/h, ``N^3``; a memory map is fine).
        box: side of every box, Mpc/h.
    """

    def __init__(self, fields: Sequence[np.ndarray], box: float):
        if not fields:
            raise ValueError("Environment: no DM field given")
        if not box > 0:
            raise ValueError(f"box size must be > 0 Mpc/h, got {box}")
        self.fields, self.box = list(fields), float(box)
        # the smoothed grids of the radius last asked for: a fit and every draw and mean of an
        # HOD ask for one radius many times; keeping one radius bounds the memory
        self._smoothed_grids: dict[tuple[int, float], np.ndarray] = {}

    def at(self, pos: np.ndarray, radius: float) -> np.ndarray:
        """``log10(1 + delta)`` smoothed on ``radius`` Mpc/h at ``pos`` (``(n, 3)``, Mpc/h)."""
        if not radius > 0:
            raise ConfigError(f"environment radius must be > 0 Mpc/h, got {radius}")
        pos = np.asarray(pos, dtype=np.float64)
        which = np.floor(pos[:, 0] / self.box).astype(np.int64) if len(pos) else np.zeros(0, int)
        if len(pos) and (which.min() < 0 or which.max() >= len(self.fields)):
            raise ValueError(
                f"positions span boxes {which.min()}..{which.max()} but {len(self.fields)} DM "
                "field(s) were given"
            )
        out = np.empty(len(pos))
        for i in np.unique(which):
            sel = which == i
            out[sel] = self._smoothed(int(i), float(radius), pos[sel] - [i * self.box, 0.0, 0.0])
        return out

    def _smoothed(self, i: int, radius: float, pos: np.ndarray) -> np.ndarray:
        if any(r != radius for _, r in self._smoothed_grids):
            self._smoothed_grids.clear()
        if (i, radius) not in self._smoothed_grids:
            field = np.asarray(coarsened(self.fields[i], self.box, radius), dtype=np.float64)
            self._smoothed_grids[i, radius] = smoothed_density(field, self.box, radius)
        return log_density_at(self._smoothed_grids[i, radius], self.box, pos)
