"""The network a painting uses: a train run directory or an exported model directory
(:mod:`dm2gal.infer.exported`), as one :class:`~dm2gal.infer.exported.TrainedModel`."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dm2gal.errors import ConfigError, MissingFileError
from dm2gal.infer.box import EVALUATION_DIR, run_copula, run_options
from dm2gal.infer.calibration import CALIBRATION_FILE, QuantileMap
from dm2gal.infer.exported import TrainedModel, is_exported, load_exported
from dm2gal.infer.recipe import training_recipe
from dm2gal.io.recipe import RECIPE_FILE, Recipe
from dm2gal.train.runs import RUN_CONFIG, load_run

log = logging.getLogger(__name__)

#: the run's evaluation outputs a model card quotes
SCORE_FILES = ("metrics.json", "realisations.json")


def run_scores(run_dir: Path) -> dict[str, Any]:
    """The run's held-out scores (``metrics.json``: network, HODs, oracle on the test region)
    and realisation scores (``realisations.json``: mean +- std over unseen boxes), if any."""
    scores = {}
    for name in SCORE_FILES:
        path = run_dir / EVALUATION_DIR / name
        if path.is_file():
            scores[path.stem] = json.loads(path.read_text())
    return scores


def run_hods(cfg: DictConfig) -> dict[str, Any]:
    """The run's HOD benchmark configs by name (``hods``; a run of older configs: ``hod``)."""
    if cfg.get("hods"):
        return OmegaConf.to_container(cfg.hods, resolve=True)
    if cfg.get("hod"):
        return {cfg.hod.get("name", "hod"): OmegaConf.to_container(cfg.hod, resolve=True)}
    return {}


def load_run_model(
    run_dir: str | Path, ckpt_path: str | Path | None = None, trust_checkpoint: bool = False
) -> TrainedModel:
    """A train run's network (its best checkpoint unless ``ckpt_path``), normalisation,
    recipe (``recipe.json``; rebuilt from its data for runs older than recipes), prediction
    settings (with the draw copula its evaluation fitted), calibration and scores.
    ``trust_checkpoint`` is the permission to unpickle a checkpoint that this project did not
    write (:func:`dm2gal.train.runs.load_run`)."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).is_file():
        raise MissingFileError(
            f"model={run_dir}: neither a train run (no {RUN_CONFIG}) nor an exported model"
        )
    cfg, module, datamodule, ckpt = load_run(
        run_dir, ckpt_path, setup_data=False, trust=trust_checkpoint
    )
    if datamodule.transform is None:
        raise ConfigError(f"{ckpt}: the checkpoint holds no input normalisation")
    recipe_path = run_dir / RECIPE_FILE
    if recipe_path.is_file():
        recipe = Recipe.load(recipe_path)
    else:
        log.warning("%s missing (run older than recipes): rebuilt from the run's data", recipe_path)
        datamodule.prepare_data()
        datamodule.setup("test")
        recipe = training_recipe(datamodule)
    voxel = datamodule.trained_voxel_size
    if voxel is not None and not math.isclose(voxel, recipe.voxel_size, rel_tol=1e-6):
        raise ConfigError(
            f"{recipe_path}: voxel_size {recipe.voxel_size} Mpc/h but the checkpoint {ckpt} "
            f"was trained on {voxel} Mpc/h"
        )
    channels_last = module.hparams.get("channels_last", False)
    options = run_options(module.net, cfg.get("evaluation") or {}, channels_last)
    options = replace(options, copula=run_copula(run_dir))
    table = run_dir / EVALUATION_DIR / CALIBRATION_FILE
    return TrainedModel(
        net=module.net.eval(),
        architecture=OmegaConf.to_container(cfg.model, resolve=True),
        transform=datamodule.transform,
        recipe=recipe,
        options=options,
        calibration=QuantileMap.load(table) if table.is_file() else None,
        provenance={"run_dir": str(run_dir.resolve()), "checkpoint": str(Path(ckpt).resolve())},
        card={
            "training_data": OmegaConf.to_container(cfg.data, resolve=True),
            "hods": run_hods(cfg),
            "scores": run_scores(run_dir),
        },
    )


def load_model(
    path: str | Path, ckpt_path: str | Path | None = None, trust_checkpoint: bool = False
) -> TrainedModel:
    """An exported model directory, else a train run directory."""
    if is_exported(path):
        return load_exported(path)
    return load_run_model(path, ckpt_path, trust_checkpoint)
