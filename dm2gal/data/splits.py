"""Train / validation / test sub-volumes of a periodic grid, separated by a guard band.

The validation and test regions are periodic voxel cubes (:class:`Region`). Everything else is
the training region, minus a guard band of ``guard`` voxels around each held-out region, so no
held-out voxel ever appears in a training input (context included) when ``guard >= context``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dm2gal.data.regions import Region
from dm2gal.errors import ConfigError, integer_option

#: The dm2gal paper's split on its 2048^3 grid: [start, stop) voxels on every axis.
PAPER = {"grid": 2048, "test": (64, 932), "val": (1000, 1800)}
UNITS = ("voxels", "fraction")


@dataclass(frozen=True)
class Splits:
    """Held-out ``test`` and ``val`` regions and the ``guard`` band (voxels) around them."""

    test: Region
    val: Region
    guard: int

    @property
    def grid(self) -> int:
        return self.test.grid

    @property
    def heldout(self) -> tuple[Region, Region]:
        return (self.test, self.val)

    @property
    def train_mask(self) -> np.ndarray:
        """``grid^3`` bool mask of voxels allowed in training inputs (grid^3 bytes: small grids)."""
        return ~(self.test.voxel_mask(self.guard) | self.val.voxel_mask(self.guard))

    def train_mask_planes(self, x0: int, x1: int) -> np.ndarray:
        """Rows ``x0:x1`` (first axis, no wrap) of :attr:`train_mask`, built without the grid."""
        out = np.ones((x1 - x0, self.grid, self.grid), dtype=bool)
        for region in self.heldout:
            m = [_axis_mask(region, ax, self.guard) for ax in range(3)]
            out &= ~(m[0][x0:x1, None, None] & m[1][None, :, None] & m[2][None, None, :])
        return out

    def is_heldout(self, pos: np.ndarray, box: float) -> np.ndarray:
        """Whether each ``(n, 3)`` position (Mpc/h, box side ``box``) lies in test or val widened
        by the guard band: objects to leave out when fitting anything on the training region."""
        pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
        return self.test.contains(pos, box, self.guard) | self.val.contains(pos, box, self.guard)

    def cube_allowed(self, starts: np.ndarray, size: int) -> np.ndarray:
        """Whether each cube ``[s, s + size)^3`` (``starts`` of shape ``(m, 3)``, wrapped) avoids
        every held-out region widened by the guard band, i.e. lies inside :attr:`train_mask`."""
        starts = np.asarray(starts).reshape(-1, 3)
        ok = np.ones(len(starts), dtype=bool)
        for region in self.heldout:
            disjoint = np.zeros(len(starts), dtype=bool)
            for ax in range(3):
                disjoint |= _disjoint(starts[:, ax], size, region, ax, self.guard)
            ok &= disjoint
        return ok

    def lattice_allowed(self, axes: Sequence[np.ndarray], size: int) -> np.ndarray:
        """:meth:`cube_allowed` on the lattice ``axes[0] x axes[1] x axes[2]`` of cube starts,
        as a bool array of shape ``(len(axes[0]), len(axes[1]), len(axes[2]))``."""
        ok = np.ones(tuple(len(a) for a in axes), dtype=bool)
        for region in self.heldout:
            d = [_disjoint(np.asarray(axes[ax]), size, region, ax, self.guard) for ax in range(3)]
            ok &= d[0][:, None, None] | d[1][None, :, None] | d[2][None, None, :]
        return ok

    def lattice_has_room(self, axes: Sequence[np.ndarray], size: int) -> bool:
        """Whether :meth:`lattice_allowed` holds for some cube, without building the lattice
        (``2048 / 2``: 1024^3 entries): along each axis a start reduces to which held-out
        regions it misses, and only those few patterns need combining."""
        patterns = []
        for ax in range(3):
            starts = np.asarray(axes[ax])
            misses = [_disjoint(starts, size, region, ax, self.guard) for region in self.heldout]
            patterns.append(np.unique(np.stack(misses, axis=1), axis=0))
        return any(np.all(a | b | c) for a in patterns[0] for b in patterns[1] for c in patterns[2])


def _axis_mask(region: Region, axis: int, pad: int) -> np.ndarray:
    m = np.zeros(region.grid, dtype=bool)
    m[region.indices(axis, pad) if region.size[axis] + 2 * pad < region.grid else slice(None)] = (
        True
    )
    return m


def _disjoint(starts: np.ndarray, size: int, region: Region, axis: int, pad: int) -> np.ndarray:
    """Whether wrapped intervals ``[s, s + size)`` miss the region's axis interval, widened."""
    n = region.grid
    lo, width = region.start[axis] - pad, region.size[axis] + 2 * pad
    if width >= n or size >= n:
        return np.zeros(len(starts), dtype=bool)
    return ((starts - lo) % n >= width) & ((lo - starts) % n >= size)


def _bounds(
    spec: Any, key: str, grid: int, scale: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``[start, stop]`` (a cube) or ``{start: [..], stop: [..]}`` -> voxel start and size."""
    if isinstance(spec, Mapping):
        if set(spec) != {"start", "stop"}:
            raise ConfigError(f"{key}: expected keys 'start' and 'stop', got {sorted(spec)}")
        start, stop = spec["start"], spec["stop"]
    elif isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 2:
        start, stop = spec
    else:
        raise ConfigError(f"{key}: expected [start, stop] or {{start: .., stop: ..}}, got {spec!r}")
    start = np.broadcast_to(np.asarray(start, dtype=float), (3,))
    stop = np.broadcast_to(np.asarray(stop, dtype=float), (3,))
    lo = np.floor(start * scale + 0.5).astype(int)
    hi = np.floor(stop * scale + 0.5).astype(int)
    size = hi - lo
    if (lo < 0).any() or (lo >= grid).any() or (size < 1).any() or (size > grid).any():
        raise ConfigError(
            f"{key}: [start, stop) = [{lo.tolist()}, {hi.tolist()}) voxels must satisfy "
            f"0 <= start < grid = {grid} and start < stop <= start + grid (periodic)"
        )
    return tuple(int(v) for v in lo), tuple(int(v) for v in size)


def make_splits(
    grid: int,
    preset: str | None = "paper",
    test: Any = None,
    val: Any = None,
    units: str = "voxels",
    guard: int = 0,
    context: int = 0,
) -> Splits:
    """Build the splits of a ``grid^3`` box from config.

    Args:
        grid: voxels per side.
        preset: "paper" (test = 64..932, val = 1000..1800 of 2048, scaled to ``grid``) or None.
        test, val: ``[start, stop]`` (a cube) or ``{start: [x, y, z], stop: [x, y, z]}`` in
            ``units`` (periodic: stop may pass the box edge); required when ``preset`` is None.
        units: "voxels" or "fraction" (of the box side).
        guard: guard band in voxels; the band used is ``max(guard, context)``.
        context: the network's context in voxels.
    """
    if preset is not None:
        if preset != "paper":
            raise ConfigError(f"data.splits.preset: expected 'paper' or null, got {preset!r}")
        if test is not None or val is not None:
            raise ConfigError("data.splits: give either 'preset' or 'test' and 'val', not both")
        test, val, scale = PAPER["test"], PAPER["val"], grid / PAPER["grid"]
    else:
        if test is None or val is None:
            raise ConfigError("data.splits: with preset null, both 'test' and 'val' are required")
        if units not in UNITS:
            raise ConfigError(f"data.splits.units: expected one of {UNITS}, got {units!r}")
        scale = 1.0 if units == "voxels" else float(grid)
    guard = integer_option(guard, "data.splits.guard", 0)
    regions = {}
    for key, spec in (("test", test), ("val", val)):
        start, size = _bounds(spec, f"data.splits.{key}", grid, scale)
        regions[key] = Region(start, size, grid)
    overlap = all(
        (_axis_mask(regions["test"], ax, 0) & _axis_mask(regions["val"], ax, 0)).any()
        for ax in range(3)
    )
    if overlap:
        raise ConfigError(
            f"data.splits: test {regions['test']} and val {regions['val']} regions overlap"
        )
    return Splits(regions["test"], regions["val"], int(max(guard, context)))
