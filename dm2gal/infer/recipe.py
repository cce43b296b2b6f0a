"""A trained run's input-field recipe (:mod:`dm2gal.io.recipe`): recorded when it trains
(``<run>/recipe.json``), read when it paints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dm2gal.io.recipe import RECIPE_FILE, FieldRecipe, Recipe, SimInfo
from dm2gal.io.store import FieldStore
from dm2gal.sim.mock import MockUniverse

log = logging.getLogger(__name__)


def mock_recipe(source: MockUniverse, store: FieldStore, inputs: list[str]) -> Recipe:
    """The mock's recipe: CIC fields; ``subhalo`` is every FoF halo (at least
    ``min_halo_particles``, the finder's cut: no mass cut) at its densest member with its M200c
    (:mod:`dm2gal.sim.so`)."""
    sim = SimInfo(
        box=source.box,
        redshift=0.0,
        omega_m=source.cosmo.Om0,
        h=source.cosmo.h,
        particle_mass=source.particle_mass,
        halo_catalog="own_fof",
    )
    # the FoF keeps groups of min_halo_particles; every one is painted, whatever its M200c
    fields = FieldRecipe(tuple(inputs), "CIC", "M200c", 0.0)
    return Recipe(fields, sim, store.box / store.grid)


def store_recipe(store: FieldStore, inputs: list[str]) -> Recipe:
    """The recipe of a store given by path: a gravity-only store painted by
    :mod:`dm2gal.paint` records its run (``attrs.sim``); any other is unknown arrays."""
    meta = store.meta()
    attrs = meta["attrs"]
    if "sim" in attrs:
        fields = FieldRecipe(
            tuple(inputs), attrs["mas"], attrs["subhalo_mass"], attrs["subhalo_min_mass"]
        )
        return Recipe(fields, SimInfo(**attrs["sim"]), store.box / store.grid)
    sim = SimInfo(store.box, None, None, None, None, halo_catalog="arrays")
    return Recipe(FieldRecipe(tuple(inputs), "unknown", "array"), sim, store.box / store.grid)


def training_recipe(datamodule: Any) -> Recipe:
    """The recipe of a set-up data module's input fields."""
    source, store, inputs = datamodule.source, datamodule.store, list(datamodule.inputs)
    if isinstance(source, MockUniverse):
        return mock_recipe(source, store, inputs)
    if hasattr(source, "recipe"):
        return source.recipe(store, inputs)
    return store_recipe(store, inputs)


def write_run_recipe(run_dir: str | Path, datamodule: Any, is_global_zero: bool = True) -> None:
    """Record the input-field recipe of a run in ``<run_dir>/recipe.json`` (global zero only,
    once the data module is set up)."""
    if is_global_zero and getattr(datamodule, "store", None) is not None:
        training_recipe(datamodule).save(Path(run_dir) / RECIPE_FILE)
