"""``python -m dm2gal.hod [hod=zheng07] [overrides]``: build one HOD benchmark in the store.

Composes the training config with the overrides (``conf/hod_field.yaml`` includes ``train``),
instantiates the data module as training does (with the model's context, so the held-out regions
and guard band are the run's) and the HOD, fits it on the training volume (as the evaluation
does: :func:`dm2gal.hod.fit_on_stores`) and writes its mean field ``hod_<name>_mean`` and one
draw ``hod_<name>_draw`` (seed ``seed``) with their config, seed and fitted parameters.
"""

from __future__ import annotations

import logging
from functools import partial

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dm2gal.cli import reports_user_errors
from dm2gal.errors import MissingFileError
from dm2gal.hod import draw_name, fit_on_stores, paint_on_store
from dm2gal.train.build import data_module_config

log = logging.getLogger(__name__)


def write_hod_field(cfg: DictConfig) -> list[str]:
    """Fit the HOD of a composed training config, write its mean and one draw; return their
    field names."""
    seed = int(cfg.get("seed", 0))
    dm = instantiate(data_module_config(cfg.data), context=instantiate(cfg.model).context)
    dm.prepare_data()
    dm.setup("fit")
    hod = instantiate(cfg.hod)
    is_heldout = partial(dm.splits.is_heldout, box=dm.store.box)
    fitted = fit_on_stores([hod], [dm.store, *dm.training_boxes], is_heldout)
    if not fitted:
        raise MissingFileError(f"{dm.store.root}: no halo/galaxy catalogues to fit the HOD on")
    attrs = {
        "source": "hod",
        "config": OmegaConf.to_container(cfg.hod, resolve=True),
        "fitted_params": hod.fitted_params(),
    }
    written = []
    for name, (field,) in paint_on_store(fitted, dm.store, [seed]).items():
        drawn = {"seed": seed} if name == draw_name(hod.name) else {}
        dm.store.write(name, field, **attrs, **drawn)
        log.info("wrote %s to %s (total M* %.4g Msun/h)", name, dm.store.root, float(field.sum()))
        written.append(name)
    return written


@hydra.main(version_base="1.3", config_path="../../conf", config_name="hod_field")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    write_hod_field(cfg)


if __name__ == "__main__":
    main()
