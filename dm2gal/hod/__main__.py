"""``python -m dm2gal.hod hod=zheng07 [overrides]``: build one HOD benchmark field in the store.

Composes ``conf/train.yaml`` with the overrides, instantiates the data module (which builds or
opens the field store and the held-out splits) and the HOD, fits it on the training region and
writes the field ``hod_<name>`` with its config, seed and fitted parameters.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path

from dm2gal.hod import build_hod_field

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger(__name__)


def main(overrides: list[str]) -> str:
    """Build, write and return the name of the HOD field selected by ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    seed = int(cfg.get("seed", 0))
    dm = instantiate(cfg.data)
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
