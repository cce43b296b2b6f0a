"""Halo and galaxy catalogues: the interface between sources, the mock universe and HODs.

Positions are comoving Mpc/h in ``[0, L)``, masses Msun/h. Catalogues are saved to and loaded
from one HDF5 file with groups ``halos`` and ``galaxies``; its attribute ``mass_definition``
names the halo mass that both ``halos.mass`` and ``galaxies.host_mass`` are (e.g. ``M200c``):
an HOD bins hosts and galaxies by one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm2gal.io.store import atomic_path

#: the catalogues' file name inside a field store's directory
CATALOGS_FILE = "catalogs.h5"
#: the file attribute naming the halo mass definition of both catalogues
MASS_DEFINITION = "mass_definition"


def _velocities(vel: np.ndarray | None, n: int) -> np.ndarray:
    """``vel`` as ``(n, 3)`` floats, NaN (unknown) when None."""
    return np.full((n, 3), np.nan) if vel is None else np.asarray(vel, dtype=float)


@dataclass
class HaloCatalog:
    """Gravity-only host halos (e.g. FoF groups).

    Attributes:
        pos: ``(n, 3)`` centres, Mpc/h.
        mass: ``(n,)`` masses, Msun/h.
        n_sub: ``(n,)`` number of subhalos (or satellite sites) per host, including the central.
        vel: ``(n, 3)`` peculiar velocities, km/s (NaN where the run gives none; the default).
    """

    pos: np.ndarray
    mass: np.ndarray
    n_sub: np.ndarray
    vel: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vel = _velocities(self.vel, len(self.mass))

    def __len__(self) -> int:
        return len(self.mass)


@dataclass
class GalaxyCatalog:
    """Galaxies of the hydro (or mock) run.

    Attributes:
        pos: ``(n, 3)`` positions, Mpc/h.
        mstar: ``(n,)`` stellar masses, Msun/h.
        host: ``(n,)`` index of the host group in the galaxies' own run (-1 if none): the
            gravity-only ``HaloCatalog`` for the mock, the hydro FoF groups for TNG and CAMELS.
        central: ``(n,)`` True for the central galaxy of its host.
        host_mass: ``(n,)`` mass of the host halo in the galaxies' own run, Msun/h, of the same
            definition as the gravity-only ``HaloCatalog.mass``.
        vel: ``(n, 3)`` peculiar velocities, km/s (NaN where the run gives none; the default).
    """

    pos: np.ndarray
    mstar: np.ndarray
    host: np.ndarray
    central: np.ndarray
    host_mass: np.ndarray
    vel: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vel = _velocities(self.vel, len(self.mstar))

    def __len__(self) -> int:
        return len(self.mstar)


def save_catalogs(
    path: str | Path, halos: HaloCatalog, galaxies: GalaxyCatalog, mass_definition: str
) -> None:
    """Write both catalogues to one HDF5 file atomically, with the halo ``mass_definition`` of
    ``halos.mass`` and ``galaxies.host_mass``."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs[MASS_DEFINITION] = mass_definition
        for group, cat in (("halos", halos), ("galaxies", galaxies)):
            g = f.create_group(group)
            for fld in fields(cat):
                g.create_dataset(fld.name, data=getattr(cat, fld.name))


def load_catalogs(path: str | Path) -> tuple[HaloCatalog, GalaxyCatalog]:
    """Read the catalogues written by :func:`save_catalogs` (velocities NaN in a file that
    has none)."""
    out = []
    with h5py.File(path, "r") as f:
        for group, cls in (("halos", HaloCatalog), ("galaxies", GalaxyCatalog)):
            if group not in f:
                raise KeyError(f"{path}: missing group '{group}'")
            required = [fld.name for fld in fields(cls) if fld.default is MISSING]
            missing = [name for name in required if name not in f[group]]
            if missing:
                raise KeyError(f"{path}: group '{group}' lacks datasets {missing}")
            present = [fld.name for fld in fields(cls) if fld.name in f[group]]
            out.append(cls(**{name: f[group][name][()] for name in present}))
    return out[0], out[1]


def mass_definition(path: str | Path) -> str | None:
    """The halo mass definition recorded in a catalogue file (None: written before it was)."""
    with h5py.File(path, "r") as f:
        value = f.attrs.get(MASS_DEFINITION)
    return None if value is None else str(value)


def stack_catalogs(
    catalogs: Sequence[tuple[HaloCatalog, GalaxyCatalog]], box: float
) -> tuple[HaloCatalog, GalaxyCatalog]:
    """The catalogues of several periodic boxes of side ``box`` (Mpc/h) as one: box ``i``'s
    positions moved to ``x + i * box`` (the first box's stay in ``[0, box)``) and its galaxies'
    host indices past every earlier box's, so hosts and neighbourhoods stay apart."""
    halos, galaxies, host_offset = [], [], 0
    for i, (h, g) in enumerate(catalogs):
        shift = np.array([i * box, 0.0, 0.0])
        halos.append(HaloCatalog(np.asarray(h.pos) + shift, h.mass, h.n_sub, h.vel))
        host = np.asarray(g.host)
        galaxies.append(
            GalaxyCatalog(
                np.asarray(g.pos) + shift,
                g.mstar,
                np.where(host >= 0, host + host_offset, -1),
                g.central,
                g.host_mass,
                g.vel,
            )
        )
        host_offset += int(max(host.max(initial=-1) + 1, len(h)))

    def join(cats: list, cls: type) -> Any:
        return cls(*(np.concatenate([getattr(c, f.name) for c in cats]) for f in fields(cls)))

    return join(halos, HaloCatalog), join(galaxies, GalaxyCatalog)
