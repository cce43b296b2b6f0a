"""Galaxy catalogues from painted stellar-mass fields, and the catalogue file.

How voxel mass becomes galaxies (:func:`field_galaxies`): a painted field is mass per voxel
that the network spread with cloud-in-cell (CIC) weights, as the training target spread each
galaxy's mass over the 8 voxels around it. Galaxies are put back where gravity-only (sub)halos
are, at their positions with their velocities and ids:

- ``share``: each voxel's mass is split among the (sub)halos whose CIC footprint (8 voxels)
  covers it, in proportion to CIC weight times (sub)halo mass (the total is kept exactly);
- ``exact``: from the most massive (sub)halo down, each gets the largest mass whose CIC share
  still fits in what is left of its 8 voxels (``min_k left_k / w_k``), so that painting the
  catalogue back with CIC gives the field again (float rounding). A plain loop over (sub)halos,
  because each one's share depends on what the ones before it took (no library does this).

What is left in a voxel becomes one galaxy at the voxel's CIC node (``i * L / N``, where CIC puts
all of a point's mass in voxel ``i``) with no host, moving with the nearest (sub)halo
(:func:`nearest_velocities`: the local bulk flow as the gravity-only catalogue knows it).
``min_mass`` drops smaller galaxies; the catalogue's attributes say how much mass that left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.spatial import cKDTree

from dm2gal.errors import ConfigError
from dm2gal.io.gravity_fields import Tracers
from dm2gal.io.store import StoreError, atomic_path

#: datasets of a catalogue file, with their units
CATALOG_UNITS = {"pos": "Mpc/h", "mstar": "Msun/h", "vel": "km/s", "host": "tracer id or -1"}


@dataclass
class Galaxies:
    """A galaxy catalogue.

    Attributes:
        pos: ``(n, 3)`` positions, Mpc/h in ``[0, L)``.
        mstar: ``(n,)`` stellar masses, Msun/h.
        vel: ``(n, 3)`` peculiar velocities, km/s (NaN where unknown).
        host: ``(n,)`` id of the host (sub)halo in the gravity-only catalogue, -1 for none.
    """

    pos: np.ndarray
    mstar: np.ndarray
    vel: np.ndarray
    host: np.ndarray

    def __len__(self) -> int:
        return len(self.mstar)


def write_galaxy_catalog(
    path: str | Path,
    pos: np.ndarray,
    mstar: np.ndarray,
    vel: np.ndarray,
    host: np.ndarray,
    **attrs: Any,
) -> None:
    """Write a galaxy catalogue to HDF5 atomically: datasets ``pos`` (Mpc/h), ``mstar``
    (Msun/h), ``vel`` (km/s), ``host`` (-1: none), each with a ``units`` attribute, and
    ``attrs`` (source, model, seed, recipe, ...; dicts stored as JSON) on the file."""
    n = len(mstar)
    arrays = {"pos": pos, "mstar": mstar, "vel": vel, "host": host}
    shapes = {"pos": (n, 3), "mstar": (n,), "vel": (n, 3), "host": (n,)}
    for key, array in arrays.items():
        if np.shape(array) != shapes[key]:
            raise ValueError(f"galaxy catalogue: {key} has shape {np.shape(array)}, "
                             f"expected {shapes[key]}")  # fmt: skip
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, array in arrays.items():
            dtype = np.int64 if key == "host" else np.float64
            f.create_dataset(key, data=np.asarray(array, dtype=dtype)).attrs["units"] = (
                CATALOG_UNITS[key]
            )
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value, default=str) if isinstance(value, dict) else value


def read_galaxy_catalog(path: str | Path) -> tuple[Galaxies, dict[str, Any]]:
    """A catalogue written by :func:`write_galaxy_catalog` and its attributes."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no galaxy catalogue here")
    with h5py.File(path, "r") as f:
        missing = [fld.name for fld in fields(Galaxies) if fld.name not in f]
        if missing:
            raise StoreError(f"{path}: not a galaxy catalogue (missing {missing})")
        galaxies = Galaxies(**{fld.name: f[fld.name][()] for fld in fields(Galaxies)})
        return galaxies, dict(f.attrs)


def cic_cells(pos: np.ndarray, grid: int, box: float) -> tuple[np.ndarray, np.ndarray]:
    """The 8 voxels ``(n, 8, 3)`` and CIC weights ``(n, 8)`` of each position, as Pylians'
    ``MAS_library`` assigns them (voxel ``i``'s node at ``i * box / grid``)."""
    u = np.mod(np.asarray(pos, dtype=np.float64), box) * (grid / box)
    base = np.floor(u).astype(np.int64)
    frac = u - base
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    cells = (base[:, None, :] + corners[None]) % grid
    weights = np.prod(np.where(corners[None] == 1, frac[:, None, :], 1 - frac[:, None, :]), -1)
    return cells, weights


def periodic(pos: np.ndarray, box: float) -> np.ndarray:
    """Positions (Mpc/h) wrapped into ``[0, box)`` as float64 (``np.mod`` of a tiny negative
    number rounds to ``box``: that is 0)."""
    wrapped = np.mod(np.asarray(pos, dtype=np.float64), box)
    wrapped[wrapped >= box] = 0.0
    return wrapped


def nearest_velocities(
    pos: np.ndarray, sites: np.ndarray, site_vel: np.ndarray, box: float
) -> np.ndarray:
    """``(n, 3)`` velocity (km/s) of the site (e.g. (sub)halo) nearest to each position in the
    periodic box of side ``box`` Mpc/h; NaN where there is no site."""
    if len(sites) == 0:
        return np.full((len(pos), 3), np.nan)
    _, nearest = cKDTree(periodic(sites, box), boxsize=box).query(periodic(pos, box))
    return np.asarray(site_vel, dtype=np.float64)[nearest].reshape(len(pos), 3)


#: how voxel mass becomes galaxies: ``share`` (each voxel's mass split among the (sub)halos whose
#: CIC footprint covers it) or ``exact`` (painted back with CIC, the catalogue is the field)
ASSIGNMENTS = ("share", "exact")


def exact_masses(view: np.ndarray, flat: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per tracer (most massive first), the largest mass whose CIC share fits in what its
    voxels have left; ``view`` (the voxels ``flat`` indexes) is left holding the remainder."""
    mass = np.zeros(len(flat))
    for i in range(len(flat)):
        used = weights[i] > 0
        w, at = weights[i][used], flat[i][used]
        ratio = view[at] / w
        limit = int(np.argmin(ratio))
        share = ratio[limit]
        if share > 0:
            mass[i] = share
            view[at] = np.maximum(view[at] - share * w, 0.0)
            view[at[limit]] = 0.0  # the voxel that limits the share is used up exactly
    return mass


def shared_masses(
    view: np.ndarray, flat: np.ndarray, weights: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """Per tracer, its share of every voxel in its CIC footprint, in proportion to its CIC
    weight there times ``prior`` (its (sub)halo mass); ``view`` (the voxels ``flat`` indexes)
    keeps only those where every covering weight is 0."""
    score = weights * prior[:, None]
    total = np.bincount(flat.ravel(), score.ravel(), minlength=len(view))
    covered = total > 0
    part = np.where(score > 0, view[flat] * score / np.where(covered, total, 1.0)[flat], 0.0)
    view[covered] = 0.0
    return part.sum(axis=1)


#: voxels of the field turned into float64 at a time when its node galaxies are collected
#: (whole x-planes up to 32 MiB), so that no float64 copy of the whole field is made
SLAB_VOXELS = 1 << 22


def field_galaxies(
    field: np.ndarray,
    box: float,
    tracers: Tracers,
    min_mass: float = 0.0,
    assignment: str = "share",
) -> tuple[Galaxies, float]:
    """The galaxies of a stellar-mass field (Msun/h per voxel) on the gravity-only
    ``tracers`` by ``assignment`` (see the module docstring); returns them and the field mass
    they leave out (galaxies below ``min_mass``), Msun/h.

    Memory: float64 copies of the voxels the tracers' footprints cover, and of one x-slab of
    :data:`SLAB_VOXELS` at a time for the rest (``field`` may be a memory map); the galaxies
    are the same as from a float64 copy of the whole field."""
    if assignment not in ASSIGNMENTS:
        raise ConfigError(f"catalog_assignment: expected one of {ASSIGNMENTS}, got {assignment!r}")
    grid = field.shape[0]
    floor = max(min_mass, np.finfo(float).tiny)
    order = np.argsort(-tracers.mass, kind="stable")
    cells, weights = cic_cells(tracers.pos[order], grid, box)
    flat = np.ravel_multi_index(tuple(np.moveaxis(cells, -1, 0)), (grid,) * 3)
    covered, local = np.unique(flat, return_inverse=True)
    view = field.reshape(-1)[covered].astype(np.float64)  # the covered voxels, in float64
    local = local.reshape(flat.shape)
    if assignment == "exact":
        mass = exact_masses(view, local, weights)
    else:
        mass = shared_masses(view, local, weights, tracers.mass[order])
    kept = mass >= floor
    nodes, node_mass, dropped = remainder_nodes(field, covered, view, floor)
    # the mass left out, without building the (many) galaxies below min_mass
    dropped += float(mass[~kept].sum())
    node_pos = np.stack(np.unravel_index(nodes, (grid,) * 3), axis=1) * (box / grid)
    galaxies = Galaxies(
        pos=np.concatenate([tracers.pos[order][kept], node_pos]),
        mstar=np.concatenate([mass[kept], node_mass]),
        vel=np.concatenate(
            [tracers.vel[order][kept], nearest_velocities(node_pos, tracers.pos, tracers.vel, box)]
        ),
        host=np.concatenate([tracers.id[order][kept], np.full(len(nodes), -1, np.int64)]),
    )
    return galaxies, dropped


def remainder_nodes(
    field: np.ndarray, covered: np.ndarray, left: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """The voxels (flat indices, ascending) holding at least ``floor`` Msun/h once the
    tracers took their mass, with that mass, and the mass of the voxels below ``floor``:
    ``left`` is what the (sorted) ``covered`` voxels kept, the other voxels keep all of theirs;
    read one x-slab of :data:`SLAB_VOXELS` at a time."""
    plane = field.shape[1] * field.shape[2]
    rest = left >= floor
    index, mass = [covered[rest]], [left[rest]]
    dropped = float(left[~rest].sum())
    step = max(1, SLAB_VOXELS // plane)
    for x0 in range(0, field.shape[0], step):
        start, stop = x0 * plane, min(field.shape[0], x0 + step) * plane
        values = field[x0 : x0 + step].reshape(-1).astype(np.float64)
        values[
            covered[np.searchsorted(covered, start) : np.searchsorted(covered, stop)] - start
        ] = 0
        small = values < floor
        dropped += float(values[small].sum())
        big = np.flatnonzero(~small)
        index.append(big + start)
        mass.append(values[big])
    index_all, mass_all = np.concatenate(index), np.concatenate(mass)
    ascending = np.argsort(index_all, kind="stable")
    return index_all[ascending], mass_all[ascending], dropped
