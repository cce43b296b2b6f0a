"""``python -m dm2gal.fields [data=...] [key=value ...]``: build the field store of the training
config's data source (painted once, streamed chunk by chunk) without training; prints its
directory. Options: those of ``python train.py`` (``conf/fields.yaml`` includes ``train``)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.train.build import data_module_config


def build_fields(cfg: DictConfig) -> Path:
    """Build ``data.source`` of a composed training config; return its store directory."""
    return Path(instantiate(data_module_config(cfg.data).source).build().root)


@hydra.main(version_base="1.3", config_path="../conf", config_name="fields")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    print(build_fields(cfg))


if __name__ == "__main__":
    main()
