"""The input-field recipe: how a run's input fields were built from its gravity-only run.

A network only makes sense on inputs built the way its training inputs were: the same fields,
mass assignment, (sub)halo selection and mass definition, units and voxel size, at the same
redshift and cosmology. :class:`FieldRecipe` says how the fields are built (what a painting
source must reproduce); :class:`SimInfo` describes the gravity-only run they came from (what a
painting source is compared with). A trained run keeps both in ``<run>/recipe.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dm2gal.errors import ConfigError
from dm2gal.io.store import atomic_write_text

RECIPE_FILE = "recipe.json"
RECIPE_VERSION = 1
#: kinds of halo catalogue whose objects make the ``subhalo`` field
HALO_CATALOGS = ("subfind", "fof", "compaso", "own_fof", "arrays")


@dataclass(frozen=True)
class FieldRecipe:
    """How the input fields are built (mass per voxel, Msun/h, on a periodic grid).

    Attributes:
        inputs: the input field names, in the network's channel order.
        mas: mass-assignment scheme of every field (Pylians name).
        subhalo_mass: mass of each object painted into ``subhalo`` (a catalogue column such as
            ``SubhaloMass``, or ``M200c``, ``N`` for CompaSO particle counts times the particle
            mass, ``array`` for user arrays).
        subhalo_min_mass: smallest object mass painted, Msun/h.
        units: units of every field.
    """

    inputs: tuple[str, ...] = ("dm", "subhalo")
    mas: str = "CIC"
    subhalo_mass: str = "SubhaloMass"
    subhalo_min_mass: float = 0.0
    units: str = "Msun/h per voxel"


@dataclass(frozen=True)
class SimInfo:
    """The gravity-only run the fields come from (read from its headers; None: unknown, as for
    user arrays).

    Attributes:
        box: box side, Mpc/h.
        redshift: snapshot redshift.
        omega_m: matter density parameter.
        h: Hubble parameter H0 / (100 km/s/Mpc).
        particle_mass: DM particle mass, Msun/h.
        halo_catalog: kind of catalogue whose objects make the ``subhalo`` field, one of
            :data:`HALO_CATALOGS`.
    """

    box: float
    redshift: float | None
    omega_m: float | None
    h: float | None
    particle_mass: float | None
    halo_catalog: str

    def __post_init__(self) -> None:
        if self.halo_catalog not in HALO_CATALOGS:
            raise ConfigError(
                f"halo_catalog: expected one of {HALO_CATALOGS}, got {self.halo_catalog!r}"
            )


@dataclass(frozen=True)
class Recipe:
    """A run's input-field recipe, the gravity-only run it was applied to, and the voxel side
    (Mpc/h) the network was trained at."""

    fields: FieldRecipe
    sim: SimInfo
    voxel_size: float
    version: int = field(default=RECIPE_VERSION)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Recipe:
        """The recipe in ``data`` (as :meth:`to_dict` wrote it); ``where`` names the file."""
        try:
            fields_ = dict(data["fields"])
            fields_["inputs"] = tuple(fields_["inputs"])
            return cls(
                fields=FieldRecipe(**fields_),
                sim=SimInfo(**data["sim"]),
                voxel_size=float(data["voxel_size"]),
                version=int(data.get("version", RECIPE_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: not an input-field recipe ({err})") from err

    def save(self, path: str | Path) -> Path:
        """Write the recipe as JSON (atomically); return the path."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read the input-field recipe ({err})") from err
        return cls.from_dict(data, str(path))
