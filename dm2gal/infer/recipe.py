"""A trained run's input-field recipe (:mod:`dm2gal.io.recipe`): recorded when it trains
(``<run>/recipe.json``), read when it paints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dm2gal.io.recipe import RECIPE_FILE, FieldRecipe, Recipe, SimInfo
from dm2gal.io.store import FieldStore, StoreError
from dm2gal.sim.mock import MOCK_SOURCE

log = logging.getLogger(__name__)


def mock_sim(store: FieldStore) -> SimInfo:
    """The gravity-only run of a mock universe's store (:mod:`dm2gal.sim.mock`, a hypercube
    universe's included): its box, z = 0, the cosmology and particle mass it records, its own
    FoF halos. A :class:`StoreError` naming the file when the metadata lacks them."""
    attrs = store.meta()["attrs"]
    try:
        cosmology = attrs["config"]["cosmology"]
        omega_m, h = float(cosmology["Om0"]), float(cosmology["H0"]) / 100.0
        particle_mass = float(attrs["particle_mass"])
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(
            f"{store.meta_path}: a mock universe store needs attrs.config.cosmology (Om0, H0) "
            f"and attrs.particle_mass ({type(err).__name__}: {err})"
        ) from err
    return SimInfo(store.box, 0.0, omega_m, h, particle_mass, halo_catalog="own_fof")


def store_recipe(store: FieldStore, inputs: list[str]) -> Recipe:
    """The recipe of a store given by path: a gravity-only store painted by
    :mod:`dm2gal.paint` records its run (``attrs.sim``); a mock universe's store gives the
    mock's (CIC fields; ``subhalo`` is every FoF halo of at least ``min_halo_particles``, the
    finder's cut: no mass cut, at its densest member with its M200c, :mod:`dm2gal.sim.so`);
    any other is unknown arrays."""
    attrs = store.meta()["attrs"]
    voxel = store.box / store.grid
    if "sim" in attrs:
        fields = FieldRecipe(
            tuple(inputs), attrs["mas"], attrs["subhalo_mass"], attrs["subhalo_min_mass"]
        )
        return Recipe(fields, SimInfo(**attrs["sim"]), voxel)
    if attrs.get("source") == MOCK_SOURCE:
        return Recipe(FieldRecipe(tuple(inputs), "CIC", "M200c", 0.0), mock_sim(store), voxel)
    sim = SimInfo(store.box, None, None, None, None, halo_catalog="arrays")
    return Recipe(FieldRecipe(tuple(inputs), "unknown", "array"), sim, voxel)


def training_recipe(datamodule: Any) -> Recipe:
    """The recipe of a set-up data module's input fields."""
    source, store, inputs = datamodule.source, datamodule.store, list(datamodule.inputs)
    if hasattr(source, "recipe"):
        return source.recipe(store, inputs)
    return store_recipe(store, inputs)


def write_run_recipe(run_dir: str | Path, datamodule: Any, is_global_zero: bool = True) -> None:
    """Record the input-field recipe of a run in ``<run_dir>/recipe.json`` (global zero only,
    once the data module is set up)."""
    if is_global_zero and getattr(datamodule, "store", None) is not None:
        training_recipe(datamodule).save(Path(run_dir) / RECIPE_FILE)
