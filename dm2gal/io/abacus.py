"""Reader for Abacus / AbacusSummit outputs (particle slices and CompaSO halos).

Read through ``abacusutils`` (the ``abacus`` extra; GPL-3.0): its ASDF readers unpack the
``pack9`` particle format and the CompaSO catalogue (with its cleaning), which are not plain
ASDF arrays. Layout of one simulation folder ``root`` at redshift folder ``zX.XXX``:
``slices/zX.XXX/{field,L0}_pack9/*.asdf`` (the particles outside and inside L0 halos: every
particle once) and ``halos/zX.XXX/`` (CompaSO). Positions come as Mpc/h in
``[-L/2, L/2)`` and are moved to ``[0, L)``; velocities in km/s; masses from
``ParticleMassHMsun`` (Msun/h).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dm2gal.errors import UserError
from dm2gal.io.gadget import wrap

#: the particle slices that together hold every particle once
SLICES = ("field_pack9", "L0_pack9")


class AbacusError(UserError, ValueError):
    """An Abacus output is missing, unreadable, or ``abacusutils`` is not installed."""


def _abacusutils() -> Any:
    try:
        from abacusnbody.data import compaso_halo_catalog, read_abacus
    except ImportError as err:  # an optional extra
        raise AbacusError(
            "sim=abacus needs abacusutils (GPL-3.0): pip install 'dm2gal[abacus]'"
        ) from err
    return read_abacus, compaso_halo_catalog


@dataclass(frozen=True)
class AbacusRun:
    """One Abacus simulation at one redshift folder.

    Args:
        root: the simulation folder (``.../Mini_N64_L32``).
        redshift: the redshift folder name, e.g. ``z0.000``.
    """

    root: Path
    redshift: str

    def slice_files(self) -> list[Path]:
        """The particle slab files (field and L0), in order."""
        files = []
        for name in SLICES:
            folder = self.root / "slices" / self.redshift / name
            if not folder.is_dir():
                raise AbacusError(f"{folder}: no such folder (particle slices {SLICES})")
            files += sorted(folder.glob("*.asdf"))
        if not files:
            raise AbacusError(f"{self.root / 'slices' / self.redshift}: no *.asdf slab files")
        return files

    @property
    def halo_dir(self) -> Path:
        return self.root / "halos" / self.redshift

    def header(self) -> dict[str, Any]:
        """The run's parameters (``BoxSize``, ``Redshift``, ``Omega_M``, ``H0``,
        ``ParticleMassHMsun``, ...), from the first particle slab."""
        read_abacus, _ = _abacusutils()
        first = self.slice_files()[0]
        try:
            meta = read_abacus.read_asdf(str(first), load=("pos",)).meta
        except Exception as err:  # the ASDF/blosc readers raise many kinds
            raise AbacusError(f"{first}: not a readable Abacus slab ({err})") from err
        missing = [
            k
            for k in ("BoxSize", "Redshift", "Omega_M", "H0", "ParticleMassHMsun")
            if k not in meta
        ]
        if missing:
            raise AbacusError(f"{first}: header lacks {missing}")
        return dict(meta)

    def particles(self, velocities: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per slab file: positions ``(n, 3)`` in ``[0, L)`` Mpc/h (float64) and velocities
        ``(n, 3)`` km/s (empty without ``velocities``)."""
        read_abacus, _ = _abacusutils()
        box = float(self.header()["BoxSize"])
        load = ("pos", "vel") if velocities else ("pos",)
        for path in self.slice_files():
            try:
                table = read_abacus.read_asdf(str(path), load=load)
            except Exception as err:
                raise AbacusError(f"{path}: not a readable Abacus slab ({err})") from err
            pos = wrap(np.asarray(table["pos"], dtype=np.float64) + box / 2, box)
            vel = np.asarray(table["vel"], dtype=np.float64) if velocities else np.zeros((0, 3))
            yield pos, vel

    def halos(self) -> dict[str, np.ndarray]:
        """CompaSO halos: ``pos`` (``x_L2com``, moved to ``[0, L)``), ``vel`` (``v_L2com``,
        km/s), ``mass`` (``N`` times the particle mass, Msun/h) and ``id``."""
        _, compaso = _abacusutils()
        if not self.halo_dir.is_dir():
            raise AbacusError(f"{self.halo_dir}: no CompaSO halo catalogue here")
        try:
            cat = compaso.CompaSOHaloCatalog(
                str(self.halo_dir), fields=["N", "x_L2com", "v_L2com", "id"]
            )
        except Exception as err:
            raise AbacusError(f"{self.halo_dir}: unreadable CompaSO catalogue ({err})") from err
        box = float(cat.header["BoxSize"])
        h = cat.halos
        return {
            "pos": wrap(np.asarray(h["x_L2com"], dtype=np.float64) + box / 2, box),
            "vel": np.asarray(h["v_L2com"], dtype=np.float64),
            "mass": np.asarray(h["N"], dtype=np.float64) * float(cat.header["ParticleMassHMsun"]),
            "id": np.asarray(h["id"], dtype=np.int64),
        }
