"""Trained runs on disk: find the run directories of a folder, a run's checkpoint, and rebuild a
run (config, Lightning module with its weights, data module with its normalisation)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dm2gal.errors import MissingFileError
from dm2gal.train.build import build_components
from dm2gal.train.checkpoints import LAST, PREVIOUS, load_checkpoint

RUN_CONFIG = Path(".hydra") / "config.yaml"


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(path: Path) -> list[Path]:
    """``[path]`` if ``path`` is a run directory (it holds ``.hydra/config.yaml``), else the run
    directories under it (a multirun folder; submitit's own folders skipped), in job order."""
    path = Path(path)
    if (path / RUN_CONFIG).is_file():
        return [path]
    if not path.is_dir():
        raise MissingFileError(f"{path}: run or multirun directory not found")
    runs = {p.parent.parent for p in path.glob(f"**/{RUN_CONFIG}") if ".submitit" not in p.parts}
    if not runs:
        raise MissingFileError(f"{path}: neither a run directory nor a folder of runs")
    return sorted(runs, key=_natural_key)


def find_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (the newest that is not a resume point, ``last.ckpt`` or
    ``last-1.ckpt``), else ``last.ckpt``."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    best = sorted(
        (p for p in ckpt_dir.glob("*.ckpt") if p.name not in (LAST, PREVIOUS)),
        key=lambda p: p.stat().st_mtime,
    )
    if best:
        return best[-1]
    if (ckpt_dir / LAST).is_file():
        return ckpt_dir / LAST
    raise MissingFileError(f"{ckpt_dir}: no checkpoint (*.ckpt) in this run directory")


def load_run(
    run_dir: Path, ckpt_path: Path | None = None, setup_data: bool = True, *, trust: bool = False
) -> tuple[DictConfig, Any, Any, Path]:
    """Rebuild a run's config, Lightning module (weights from the checkpoint) and data module
    (normalisation from the checkpoint; with ``setup_data`` also its field store and splits).
    The checkpoint is read by :func:`~dm2gal.train.checkpoints.load_checkpoint` (``trust``: also
    a file holding objects dm2gal checkpoints never hold)."""
    run_dir = Path(run_dir)
    config_path = run_dir / RUN_CONFIG
    if not config_path.is_file():
        raise MissingFileError(f"{config_path}: not found; run_dir must be a train run directory")
    cfg = OmegaConf.load(config_path)
    ckpt_path = Path(ckpt_path) if ckpt_path else find_checkpoint(run_dir)
    state = load_checkpoint(ckpt_path, trust=trust)
    datamodule, module = build_components(cfg)
    module.load_state_dict(state["state_dict"])
    if setup_data:
        datamodule.prepare_data()
        datamodule.setup("test")
    if type(datamodule).__qualname__ in state:
        datamodule.load_state_dict(state[type(datamodule).__qualname__])
    return cfg, module, datamodule, ckpt_path
