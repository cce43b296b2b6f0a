"""``python -m dm2gal.hod [hod=zheng07] [overrides]``: build one HOD benchmark field in the store.

Composes the training config with the overrides (``conf/hod_field.yaml`` includes ``train``),
instantiates the data module as training does (with the model's context, so the held-out regions
and guard band are the run's) and the HOD, fits it on the training region and writes the field
``hod_<name>`` with its config, seed and fitted parameters.
"""

from __future__ import annotations

import logging
from functools import partial

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dm2gal.cli import reports_user_errors
from dm2gal.hod import build_hod_field
from dm2gal.train.build import data_module_config

log = logging.getLogger(__name__)


def write_hod_field(cfg: DictConfig) -> str:
    """Build, write and return the name of the HOD field of a composed training config."""
    seed = int(cfg.get("seed", 0))
    dm = instantiate(data_module_config(cfg.data), context=instantiate(cfg.model).context)
    dm.prepare_data()
    dm.setup("fit")
    hod = instantiate(cfg.hod)
    is_heldout = partial(dm.splits.is_heldout, box=dm.store.box)
    field = build_hod_field(hod, dm.store, is_heldout, seed)
    name = f"hod_{hod.name}"
    dm.store.write(
        name,
        field,
        source="hod",
        config=OmegaConf.to_container(cfg.hod, resolve=True),
        seed=seed,
        fitted_params=hod.fitted_params(),
    )
    log.info("wrote %s to %s (total M* %.4g Msun/h)", name, dm.store.root, float(field.sum()))
    return name


@hydra.main(version_base="1.3", config_path="../../conf", config_name="hod_field")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    write_hod_field(cfg)


if __name__ == "__main__":
    main()
