"""Fit HODs on the catalogues of field stores and paint their mean and draws on a store.

The one place an HOD meets the stores: the held-out evaluation, the realisations and
``python -m dm2gal.hod`` all fit and paint through here. Fields are stellar mass per voxel
(Msun/h, float32) named ``hod_<name>_mean`` (the expected field, one) and ``hod_<name>_draw``
(random draws, one per seed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dm2gal.errors import ConfigError
from dm2gal.hod.base import HOD, IsHeldout
from dm2gal.hod.environment import DM_FIELD, Environment
from dm2gal.io.catalog import CATALOGS_FILE, load_catalogs, mass_definition, stack_catalogs
from dm2gal.io.store import FieldStore

log = logging.getLogger(__name__)


def mean_name(hod: str) -> str:
    """The field name of HOD ``hod``'s mean."""
    return f"hod_{hod}_mean"


def draw_name(hod: str) -> str:
    """The field name of HOD ``hod``'s draws."""
    return f"hod_{hod}_draw"


def store_environment(stores: Sequence[FieldStore]) -> Environment:
    """The gravity-only environment of ``stores`` (one box each, side by side along x)."""
    return Environment([store.read(DM_FIELD) for store in stores], stores[0].box)


def fit_on_stores(
    hods: Sequence[HOD], stores: Sequence[FieldStore], is_heldout: IsHeldout
) -> dict[str, HOD]:
    """Each HOD (by name) fitted on the catalogues of ``stores``: the first box's hosts and
    galaxies where ``is_heldout(pos)`` is False, every further box (a further training
    universe) whole. Stores without catalogues are left out with a warning; none: no HOD."""
    if not hods:
        return {}
    with_catalogs = [s for s in stores if (s.root / CATALOGS_FILE).is_file()]
    if not with_catalogs or with_catalogs[0] is not stores[0]:
        log.warning("%s not found: no HOD benchmark", stores[0].root / CATALOGS_FILE)
        return {}
    if len(with_catalogs) < len(stores):
        missing = [str(s.root) for s in stores if s not in with_catalogs]
        log.warning("HODs fitted without the training boxes lacking catalogues: %s", missing)
    paths = [s.root / CATALOGS_FILE for s in with_catalogs]
    definitions = {mass_definition(p) for p in paths} - {None}
    if len(definitions) > 1:
        raise ConfigError(
            f"the training boxes' catalogues use different halo mass definitions {definitions} "
            f"({[str(p) for p in paths]}): build them with one data.source.halo_mass"
        )
    box = stores[0].box
    halos, galaxies = stack_catalogs([load_catalogs(p) for p in paths], box)

    def first_box_heldout(pos: np.ndarray) -> np.ndarray:
        # the further boxes lie at x >= box (stack_catalogs) and are trained on whole
        return (pos[:, 0] < box) & is_heldout(pos)

    env = store_environment(with_catalogs) if any(h.needs_environment for h in hods) else None
    for hod in hods:
        hod.fit(halos, galaxies, first_box_heldout, box, env)
        hod.mass_definition = next(iter(definitions), None)
    return {hod.name: hod for hod in hods}


def paint_on_store(
    hods: Mapping[str, HOD],
    store: FieldStore,
    seeds: Sequence[int],
    cut: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, list[np.ndarray]]:
    """Each fitted HOD's mean (:func:`mean_name`, one field) and its draws (:func:`draw_name`,
    one per seed) painted on the whole box of ``store`` (its halos), each passed through
    ``cut`` when given; none, with a warning, when the store has no catalogues."""
    if not hods:
        return {}
    path = store.root / CATALOGS_FILE
    if not path.is_file():
        log.warning("%s not found: no HOD painted on this box", path)
        return {}
    definition = mass_definition(path)
    for name, hod in hods.items():
        fitted = getattr(hod, "mass_definition", None)
        if None not in (fitted, definition) and fitted != definition:
            raise ConfigError(
                f"{path}: halo masses are {definition} but HOD '{name}' was fitted on {fitted}"
            )
    halos, _ = load_catalogs(path)
    env = store_environment([store]) if any(h.needs_environment for h in hods.values()) else None
    keep = cut or (lambda field: field)
    out = {}
    for name, hod in hods.items():
        out[mean_name(name)] = [keep(hod.paint_mean(halos, store.grid, store.box, env))]
        out[draw_name(name)] = [
            keep(hod.paint(halos, store.grid, store.box, seed, env)) for seed in seeds
        ]
    return out
