"""The gravity-only half of every source: the ``subhalo`` input field and its tracers.

``subhalo`` is the mass of each gravity-only (sub)halo painted at its centre
(:class:`Tracers`), with the recipe's mass-assignment scheme (``dm``, the DM particles' mass
per voxel, is :func:`dm2gal.io.paint.paint_field` over particle chunks).
The tracers are also where painted galaxies are placed (:mod:`dm2gal.infer.catalog`), so a
gravity-only store keeps them beside its fields in ``tracers.h5`` (with velocities and ids).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dm2gal.io.gadget import GroupCatalog
from dm2gal.io.paint import paint_field
from dm2gal.io.store import FieldStore, StoreError, atomic_path

#: the tracers' file name inside a gravity-only field store
TRACERS_FILE = "tracers.h5"


@dataclass
class Tracers:
    """Gravity-only (sub)halos: what the ``subhalo`` field paints and galaxies are placed on.

    Attributes:
        pos: ``(n, 3)`` centres, Mpc/h in ``[0, L)``.
        mass: ``(n,)`` masses, Msun/h (the recipe's mass definition).
        vel: ``(n, 3)`` peculiar velocities, km/s (NaN where the run has none).
        id: ``(n,)`` row of each object in its source catalogue.
    """

    pos: np.ndarray
    mass: np.ndarray
    vel: np.ndarray
    id: np.ndarray

    def __len__(self) -> int:
        return len(self.mass)

    def select(self, min_mass: float) -> Tracers:
        """The objects with mass > 0 and at least ``min_mass`` Msun/h."""
        keep = (self.mass > 0) & (self.mass >= min_mass)
        return Tracers(*(getattr(self, f.name)[keep] for f in fields(self)))

    def save(self, path: str | Path, **attrs: Any) -> None:
        """Write the tracers to HDF5 atomically, ``attrs`` as file attributes."""
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for fld in fields(self):
                f.create_dataset(fld.name, data=getattr(self, fld.name))
            f.attrs.update({k: str(v) for k, v in attrs.items()})

    @classmethod
    def load(cls, path: str | Path) -> Tracers:
        """Read tracers written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no gravity-only tracers file (build the store first)")
        with h5py.File(path, "r") as f:
            missing = [fld.name for fld in fields(cls) if fld.name not in f]
            if missing:
                raise StoreError(f"{path}: missing datasets {missing}")
            return cls(**{fld.name: f[fld.name][()] for fld in fields(cls)})


def subfind_tracers(cat: GroupCatalog, mass_column: str, velocities: bool = True) -> Tracers:
    """SUBFIND subhalos (``SubhaloPos``, ``mass_column``, ``SubhaloVel``) of a catalogue, or
    FoF groups (``GroupPos``, ``mass_column``, ``GroupVel`` in km/s/a converted to km/s) when
    ``mass_column`` is a ``Group`` column; without ``velocities`` none are read (NaN)."""
    table = "Group" if mass_column.startswith("Group") else "Subhalo"
    pos_key, vel_key = f"{table}Pos", f"{table}Vel"
    values = cat.read(table, [pos_key, mass_column] + ([vel_key] if velocities else []))
    mass = values[mass_column]
    vel = np.full((len(mass), 3), np.nan)
    if velocities:
        vel = values[vel_key].astype(np.float64)
        if table == "Group":  # GroupVel is in km/s/a, SubhaloVel already peculiar km/s
            vel = vel / (1.0 + cat.info.redshift)
    return Tracers(values[pos_key], mass, vel, np.arange(len(mass), dtype=np.int64))


def paint_subhalo(store: FieldStore, tracers: Tracers, mas: str, origin: str) -> None:
    """Paint the ``subhalo`` field of ``store`` from ``tracers`` (already selected) and save
    them beside it (:data:`TRACERS_FILE`), ``origin`` recorded with both."""
    paint_field(store, "subhalo", [(tracers.pos, tracers.mass)], mas, progress=False, origin=origin)
    tracers.save(store.root / TRACERS_FILE, origin=origin)
