"""The reference fields scored beside a network: the HOD benchmarks (fitted on the training
region only, painted on a box's gravity-only halos) and the mock's oracle fields
(:mod:`dm2gal.sim.galaxies`), for the held-out evaluation (:mod:`dm2gal.eval.evaluation`) and
the whole-box realisations (:mod:`dm2gal.eval.realisations`). Fields are stellar mass per
voxel, Msun/h, float32.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.hod import HOD
from dm2gal.io.catalog import CATALOGS_FILE, load_catalogs, stack_catalogs
from dm2gal.io.store import FieldStore
from dm2gal.sim.mock import ORACLE_FIELDS

log = logging.getLogger(__name__)


def fit_hods(hod_cfgs: Sequence[DictConfig], datamodule: Any) -> dict[str, HOD]:
    """Each HOD (by name) fitted on the volume the network trains on: the catalogues' galaxies
    outside the held-out regions of the source box, and every further training box's
    (``data.training_universes`` / ``training_stores``) whole."""
    if not hod_cfgs:
        return {}
    stores = [datamodule.store, *datamodule.training_boxes]
    paths = [store.root / CATALOGS_FILE for store in stores]
    if not paths[0].is_file():
        log.warning("%s not found: no HOD benchmark for this data source", paths[0])
        return {}
    missing = [str(p) for p in paths[1:] if not p.is_file()]
    if missing:
        log.warning("HODs fitted without the training boxes lacking catalogues: %s", missing)
    box = datamodule.box
    halos, galaxies = stack_catalogs([load_catalogs(p) for p in paths if p.is_file()], box)

    def is_heldout(pos: np.ndarray) -> np.ndarray:
        # the further boxes lie at x >= box (stack_catalogs) and are trained on whole
        return (pos[:, 0] < box) & datamodule.splits.is_heldout(pos, box)

    hods = [instantiate(cfg) for cfg in hod_cfgs]
    return {hod.name: hod.fit(halos, galaxies, is_heldout, box) for hod in hods}


def paint_hods(
    hods: Mapping[str, HOD], store: FieldStore, seeds: Sequence[int], region: Region | None = None
) -> dict[str, list[np.ndarray]]:
    """Each fitted HOD, ``hod_<name>``, painted on the whole box of ``store`` (its halos) once
    per seed in ``seeds``, each draw cut to ``region`` (periodic) when given; none, with a
    warning, when the store has no catalogues."""
    if not hods:
        return {}
    catalogs = store.root / CATALOGS_FILE
    if not catalogs.is_file():
        log.warning("%s not found: no HOD painted on this box", catalogs)
        return {}
    halos, _ = load_catalogs(catalogs)

    def paint(hod: HOD, seed: int) -> np.ndarray:
        field = hod.paint(halos, store.grid, store.box, seed)
        return field if region is None else read_crop(field, region.start, region.size)

    return {f"hod_{name}": [paint(hod, seed) for seed in seeds] for name, hod in hods.items()}


def oracle_fields(store: FieldStore, region: Region | None = None) -> dict[str, np.ndarray]:
    """The mock's oracle fields that ``store`` holds, on ``region`` (periodic) or, without one,
    the whole box read into memory; none for a source without them."""
    held = [name for name in ORACLE_FIELDS if name in store.fields()]
    if region is None:
        return {name: store.read(name, mmap=False) for name in held}
    return {name: read_crop(store.read(name), region.start, region.size) for name in held}
