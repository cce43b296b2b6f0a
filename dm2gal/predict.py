"""``python -m dm2gal.predict run_dir=<run> [store=...] [out=...] [tile=...]``: a trained run's
prediction of a whole box (its own, or any field store holding its input fields, e.g. from
``python -m dm2gal.fields``) into a field store, with the run, checkpoint, normalisation and
input-field hashes in its metadata; ``samples=K`` adds K seeded draws of a probabilistic run
(``<name>_mean``, ``<name>_draw_<i>``). Options: ``conf/predict.yaml``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.errors import ConfigError
from dm2gal.infer.calibration import QuantileMap, calibrate_store_field
from dm2gal.infer.predict import (
    DEFAULT_TILE,
    PredictOptions,
    check_tile,
    predict_store,
    tile_size,
)
from dm2gal.io.store import FieldStore
from dm2gal.train.runs import load_run


def predict(cfg: DictConfig) -> Path:
    """Predict the box selected by ``cfg`` (``conf/predict.yaml``); return the (mean) field's
    path."""
    run_dir = Path(cfg.run_dir)
    run_cfg, module, datamodule, ckpt = load_run(run_dir, cfg.ckpt_path, cfg.store is None)
    if datamodule.transform is None:
        raise ValueError(f"{ckpt}: the checkpoint holds no input normalisation (data module state)")
    source = FieldStore(cfg.store) if cfg.store else datamodule.store
    evaluation = run_cfg.get("evaluation") or {}
    if cfg.samples < 0:
        raise ConfigError(f"samples: expected the number of draws (>= 0), got {cfg.samples}")
    seeds = list(range(cfg.seed, cfg.seed + cfg.samples))
    name = f"{cfg.name}_mean" if seeds else cfg.name
    # an explicit tile must be one the network takes; the run's own setting is rounded as in
    # its evaluation, and the tile used is the one recorded
    if cfg.tile is not None:
        tile = check_tile(module.net, cfg.tile)
    else:
        tile = tile_size(module.net, evaluation.get("tile", DEFAULT_TILE))
    batch_size = cfg.batch_size if cfg.batch_size is not None else evaluation.get("batch_size", 4)
    options = PredictOptions(
        tile=tile, batch_size=batch_size, channels_last=module.hparams.get("channels_last", False)
    )
    store = predict_store(
        module.net,
        datamodule.transform,
        source,
        datamodule.inputs,
        cfg.out or run_dir / "prediction",
        cfg.name,
        {"run_dir": str(run_dir.resolve()), "checkpoint": str(Path(ckpt).resolve())},
        voxel_size=datamodule.trained_voxel_size,
        options=options,
        seeds=seeds,
    )
    print(f"wrote {store.path(name)} (checkpoint {ckpt})")
    for i, seed in enumerate(seeds):
        print(f"wrote {store.path(f'{cfg.name}_draw_{i}')} (seed {seed})")
    table = Path(cfg.calibration or run_dir / "evaluation" / "calibration.csv")
    if cfg.calibration or table.is_file():
        calibrated = f"{name}_calibrated"
        calibrate_store_field(
            store, name, QuantileMap.load(table), calibrated, calibration=str(table.resolve())
        )
        print(f"wrote {store.path(calibrated)} (calibration {table})")
    return store.path(name)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
