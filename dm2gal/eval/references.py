"""The reference fields scored beside a network: the HOD benchmarks (fitted on the training
region only, their mean and draws painted on a box's gravity-only halos,
:mod:`dm2gal.hod.fitting`) and the mock's oracle fields (:mod:`dm2gal.sim.galaxies`), for the
held-out evaluation (:mod:`dm2gal.eval.evaluation`) and the whole-box realisations
(:mod:`dm2gal.eval.realisations`). Fields are stellar mass per voxel, Msun/h, float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.hod import HOD, fit_on_stores, paint_on_store
from dm2gal.io.store import FieldStore
from dm2gal.sim.mock import ORACLE_FIELDS


def fit_hods(hod_cfgs: Sequence[DictConfig], datamodule: Any) -> dict[str, HOD]:
    """Each HOD (by name) fitted on the volume the network trains on: the catalogues' galaxies
    outside the held-out regions of the source box, and every further training box's
    (``data.training_universes`` / ``training_stores``) whole."""
    hods = [instantiate(cfg) for cfg in hod_cfgs]
    stores = [datamodule.store, *datamodule.training_boxes]
    is_heldout = partial(datamodule.splits.is_heldout, box=datamodule.box)
    return fit_on_stores(hods, stores, is_heldout)


def paint_hods(
    hods: Mapping[str, HOD], store: FieldStore, seeds: Sequence[int], region: Region | None = None
) -> dict[str, list[np.ndarray]]:
    """Each fitted HOD's mean ``hod_<name>_mean`` and draws ``hod_<name>_draw`` (one per seed
    in ``seeds``) painted on the whole box of ``store`` (its halos), each cut to ``region``
    (periodic) when given; none, with a warning, when the store has no catalogues."""
    cut = None if region is None else partial(_cut, region=region)
    return paint_on_store(hods, store, seeds, cut)


def _cut(field: np.ndarray, region: Region) -> np.ndarray:
    return read_crop(field, region.start, region.size)


def oracle_fields(store: FieldStore, region: Region | None = None) -> dict[str, np.ndarray]:
    """The mock's oracle fields that ``store`` holds, on ``region`` (periodic) or, without one,
    the whole box read into memory; none for a source without them."""
    held = [name for name in ORACLE_FIELDS if name in store.fields()]
    if region is None:
        return {name: store.read(name, mmap=False) for name in held}
    return {name: read_crop(store.read(name), region.start, region.size) for name in held}
