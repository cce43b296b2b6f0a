"""What a network can be trusted on: the gravity-only run compared with its training run.

The network knows one voxel size: the grid is ``round(box / voxel)``, and painting stops when
the voxel that gives differs from the trained one by more than a tolerance. It learned one
redshift: another stops painting unless explicitly allowed. Cosmology (Omega_m, h), particle
mass, halo-catalogue kind and (sub)halo mass definition differences do not stop it: each is a
warning, recorded in the output's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from dm2gal.errors import ConfigError
from dm2gal.io.recipe import Recipe, SimInfo

#: relative difference below which Omega_m, h and the particle mass count as the same
SAME_REL = 1e-3


class TrustError(ConfigError):
    """The gravity-only run is outside what the network was trained on."""


@dataclass(frozen=True)
class TrustOptions:
    """``voxel_tolerance``: largest relative voxel-size difference allowed (0.01 = 1%);
    ``redshift_tolerance``: largest redshift difference allowed; ``allow_redshift``: paint at
    another redshift all the same (a warning instead)."""

    voxel_tolerance: float = 0.01
    redshift_tolerance: float = 0.01
    allow_redshift: bool = False

    def __post_init__(self) -> None:
        for key in ("voxel_tolerance", "redshift_tolerance"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{key}: expected a number >= 0, got {value!r}")


def paint_grid(recipe: Recipe, info: SimInfo, tolerance: float) -> int:
    """``round(box / voxel)`` for the network's voxel; :class:`TrustError` naming box, grid
    and both voxel sizes when that grid's voxel differs by more than ``tolerance``."""
    voxel = recipe.voxel_size
    grid = max(1, round(info.box / voxel))
    own = info.box / grid
    off = abs(own / voxel - 1)
    if off > tolerance:
        raise TrustError(
            f"box {info.box:g} Mpc/h on a {grid}^3 grid gives voxels of {own:.6g} Mpc/h, the "
            f"network was trained on {voxel:.6g} Mpc/h ({off:.2%} off, more than "
            f"voxel_tolerance={tolerance:g})"
        )
    return grid


def redshift_warning(recipe: Recipe, info: SimInfo, options: TrustOptions) -> list[str]:
    """Nothing when the redshifts agree; a warning when they differ and ``allow_redshift``;
    else :class:`TrustError`."""
    trained, given = recipe.sim.redshift, info.redshift
    if trained is None or given is None:
        return [f"redshift: unknown ({'training run' if trained is None else 'this run'})"]
    if abs(trained - given) <= options.redshift_tolerance:
        return []
    message = f"redshift {given:g}, the network was trained at z={trained:g}"
    if not options.allow_redshift:
        raise TrustError(f"{message} (set allow_redshift=true to paint all the same)")
    return [f"{message} (allow_redshift=true)"]


def _differs(a: float | None, b: float | None) -> bool:
    return a is None or b is None or not math.isclose(a, b, rel_tol=SAME_REL)


def differences(
    recipe: Recipe, info: SimInfo, subhalo_mass: str, bound: Mapping[str, float] | None = None
) -> list[str]:
    """One warning per difference from the training run: Omega_m, h, particle mass,
    halo-catalogue kind and the (sub)halo mass definition of the ``subhalo`` field. A network
    bound to an ``Om0`` (``bound``: a conditioned network's values) trained across Omega_m:
    the run's Omega_m is compared with the bound value, and its particle mass with the
    training run's scaled to it (mass per particle is proportional to Omega_m)."""
    trained = recipe.sim
    om0 = (bound or {}).get("Om0")
    expected = {"omega_m": trained.omega_m, "h": trained.h, "particle_mass": trained.particle_mass}
    where = dict.fromkeys(expected, "in the training run")
    if om0 is not None:
        scale = None if trained.omega_m is None else om0 / trained.omega_m
        if trained.particle_mass is not None and scale is not None:
            expected["particle_mass"] = trained.particle_mass * scale
            where["particle_mass"] = f"for the training run at the bound Om0 = {om0:g}"
        expected["omega_m"], where["omega_m"] = om0, "the network's bound Om0"
    found = []
    for key, name in (("omega_m", "Omega_m"), ("h", "h"), ("particle_mass", "particle mass")):
        a, b = expected[key], getattr(info, key)
        if _differs(a, b):
            ratio = "" if a is None or b is None else f" (ratio {b / a:.4g})"
            found.append(f"{name}: {b} here, {a} {where[key]}{ratio}")
    if trained.halo_catalog != info.halo_catalog:
        found.append(
            f"halo catalogue: {info.halo_catalog} here, {trained.halo_catalog} in the training "
            "run (the subhalo field holds other objects)"
        )
    if subhalo_mass != recipe.fields.subhalo_mass:
        found.append(
            f"subhalo mass: {subhalo_mass} here, {recipe.fields.subhalo_mass} in the training run"
        )
    return found
