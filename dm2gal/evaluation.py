"""Held-out evaluation: predict the test region, paint the HOD benchmarks, write the report.

Artefacts go to ``<out_dir>/evaluation/``: a field store with the truth, the prediction and each
HOD field on the test region (with metadata), ``metrics.json``, CSV tables and PNG plots.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dm2gal import __version__
from dm2gal.calibration import fit_calibration
from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.io.store import FieldStore
from dm2gal.predict import predict_region

log = logging.getLogger(__name__)


def region_field(field: np.ndarray, region: Region) -> np.ndarray:
    """The voxels of ``field`` covered by ``region`` (periodic), as float32."""
    return read_crop(field, region.start, region.size)


def hod_fields(
    hod_cfgs: Sequence[DictConfig], datamodule: Any, region: Region, seed: int
) -> dict[str, np.ndarray]:
    """Fit each HOD on the training region, paint it on the whole box, cut the test region."""
    catalogs = datamodule.store.root / "catalogs.h5"
    if not catalogs.is_file():
        log.warning("%s not found: no HOD benchmark for this data source", catalogs)
        return {}
    from dm2gal.hod import build_hod_field

    def is_heldout(pos: np.ndarray) -> np.ndarray:
        return datamodule.splits.is_heldout(pos, datamodule.box)

    out = {}
    for hod_cfg in hod_cfgs:
        hod = instantiate(hod_cfg)
        field = build_hod_field(hod, datamodule.store, is_heldout, seed)
        out[f"hod_{hod.name}"] = region_field(field, region)
    return out


def score_above(
    out_dir: Path,
    side: float,
    truth: np.ndarray,
    fields: dict[str, np.ndarray],
    min_mass: float,
    options: dict,
) -> dict[str, float]:
    """The paper's scoring beside the whole field: a report on the voxels whose true M* exceeds
    ``min_mass`` (Msun/h; every other voxel set to 0 in every field), in ``above_<min_mass>/``."""
    keep = truth > min_mass
    if not keep.any():
        log.warning("no test voxel has a true M* above evaluation.min_mass = %g", min_mass)
        return {}
    from dm2gal.report import write_report

    above = write_report(
        out_dir / f"above_{min_mass:g}",
        side,
        np.where(keep, truth, 0).astype(np.float32),
        {name: np.where(keep, field, 0).astype(np.float32) for name, field in fields.items()},
        **options,
    )
    return {
        f"{name}/above_{min_mass:g}/{key}": float(value)
        for name, values in above["models"].items()
        for key, value in values.items()
    }


def evaluate_test_region(
    net: torch.nn.Module,
    datamodule: Any,
    out_dir: Path,
    *,
    tile: int = 32,
    batch_size: int = 4,
    channels_last: bool = False,
    calibration_voxels: int = 0,
    min_mass: float | None = None,
    hods: Sequence[DictConfig] = (),
    seed: int = 0,
    config: dict | None = None,
    logger: Any = None,
    report_options: dict | None = None,
) -> dict[str, float]:
    """Predict the test region with ``net``, compare truth / model / HODs, write every artefact
    (with ``min_mass``: also the paper's scoring, on voxels whose true M* exceeds it, into
    ``above_<min_mass>/``). With ``calibration_voxels`` > 0, about that many voxels of the box are
    also predicted to fit a quantile calibration on their training-region voxels
    (:mod:`dm2gal.calibration`, saved as ``calibration.csv``), and the calibrated prediction is
    reported as ``model_calibrated`` beside the raw one."""
    from dm2gal.report import write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store, region, transform = datamodule.store, datamodule.splits.test, datamodule.transform
    if len(set(region.size)) != 1:
        raise ValueError(
            f"the test region must be a cube for P(k) and B(k), got size {region.size}"
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    inputs = [store.read(name) for name in datamodule.inputs]

    def predict(where: Region) -> np.ndarray:
        return predict_region(
            net,
            inputs,
            where,
            transform.forward_input,
            transform.inverse_prediction,
            tile=tile,
            batch_size=batch_size,
            device=device,
            channels_last=channels_last,
        )

    prediction = predict(region)
    truth = region_field(store.read(datamodule.target), region)
    fields = {"model": prediction}
    if calibration_voxels:
        calibrate = fit_calibration(
            predict, store.read(datamodule.target), datamodule.splits, tile, calibration_voxels
        )
        calibrate.save(out_dir / "calibration.csv")
        fields["model_calibrated"] = calibrate(prediction)
    fields.update(hod_fields(hods, datamodule, region, seed))

    side = region.size[0] * store.box / store.grid
    results = FieldStore(out_dir / "fields")
    results.init(
        side,
        region.size[0],
        source=str(store.root),
        region_start=list(region.start),
        config=config,
        code_version=__version__,
        seed=seed,
    )
    results.write("truth", truth)
    for name, field in fields.items():
        results.write(name, field)

    options = report_options or {}
    report = write_report(out_dir, side, truth, fields, logger=logger, **options)
    metrics = {
        f"{name}/{key}": float(value)
        for name, values in report["models"].items()
        for key, value in values.items()
    }
    if min_mass is not None:
        metrics.update(score_above(out_dir, side, truth, fields, min_mass, options))
    return metrics


def evaluate_run(
    module: Any,
    datamodule: Any,
    cfg: DictConfig,
    run_dir: Path,
    *,
    loggers: Sequence[Any] = (),
    checkpoint: str | None = None,
    hods: Sequence[DictConfig] | None = None,
) -> dict[str, float]:
    """Evaluate a trained module on its data module's test region into ``run_dir/evaluation``."""
    wandb_run = next((lg.experiment for lg in loggers if type(lg).__name__ == "WandbLogger"), None)

    def log_artefact(name: str, value: Any) -> None:
        if wandb_run is None:
            return
        import wandb

        is_image = isinstance(value, str | Path) and str(value).endswith(".png")
        wandb_run.log({f"eval/{name}": wandb.Image(str(value)) if is_image else value})

    if hods is None:
        hods = [cfg.hod] if cfg.get("hod") else []
    evaluation = cfg.get("evaluation") or {}
    metrics = evaluate_test_region(
        module.net,
        datamodule,
        run_dir / "evaluation",
        tile=evaluation.get("tile", 32),
        batch_size=evaluation.get("batch_size", 4),
        channels_last=module.hparams.get("channels_last", False),
        calibration_voxels=evaluation.get("calibration_voxels", 0),
        min_mass=evaluation.get("min_mass"),
        hods=hods,
        seed=cfg.seed,
        config={"config": OmegaConf.to_container(cfg, resolve=False), "checkpoint": checkpoint},
        logger=log_artefact,
        report_options=OmegaConf.to_container(evaluation.get("report", {})),
    )
    for lg in loggers:
        lg.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
    return metrics


def find_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (newest non-``last``), else ``last.ckpt``."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    best = sorted(
        (p for p in ckpt_dir.glob("*.ckpt") if p.name != "last.ckpt"),
        key=lambda p: p.stat().st_mtime,
    )
    if best:
        return best[-1]
    if (ckpt_dir / "last.ckpt").is_file():
        return ckpt_dir / "last.ckpt"
    raise FileNotFoundError(f"{ckpt_dir}: no checkpoint (*.ckpt) in this run directory")


def load_run(
    run_dir: Path, ckpt_path: Path | None = None, setup_data: bool = True
) -> tuple[DictConfig, Any, Any, Path]:
    """Rebuild a run's config, Lightning module (weights from the checkpoint) and data module
    (normalisation from the checkpoint; with ``setup_data`` also its field store and splits)."""
    from dm2gal.training import build_components

    run_dir = Path(run_dir)
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found; run_dir must be a train run directory")
    cfg = OmegaConf.load(config_path)
    ckpt_path = Path(ckpt_path) if ckpt_path else find_checkpoint(run_dir)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: checkpoint not found")
    datamodule, module = build_components(cfg)
    # our own checkpoints: trusted pickles (they hold the data module's normalisation)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    if setup_data:
        datamodule.prepare_data()
        datamodule.setup("test")
    if type(datamodule).__qualname__ in state:
        datamodule.load_state_dict(state[type(datamodule).__qualname__])
    return cfg, module, datamodule, ckpt_path


def run_dirs(path: Path) -> list[Path]:
    """``path`` itself if it is a run directory, else the run directories of a multirun folder."""
    path = Path(path)
    if (path / ".hydra" / "config.yaml").is_file():
        return [path]
    runs = sorted(
        {
            p.parent.parent
            for p in path.glob("**/.hydra/config.yaml")
            if (p.parent.parent / "checkpoints").is_dir()
        }
    )
    if not runs:
        raise FileNotFoundError(f"{path}: neither a run directory nor a folder of runs")
    return runs


def evaluate_paths(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """``evaluate.py``: evaluate every run under ``cfg.run_dir`` (or the run of ``cfg.ckpt_path``)
    with the HOD benchmarks named in ``cfg.hods`` and the run's ``evaluation`` settings updated
    by the non-null ones of ``cfg.evaluation``; return metrics per run directory."""
    from dm2gal.loggers import wandb_logger

    conf_dir = Path(__file__).resolve().parent.parent / "conf"
    hods = []
    for name in cfg.hods:
        path = conf_dir / "hod" / f"{name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"hods: no HOD config '{name}' ({path} not found)")
        hods.append(OmegaConf.load(path))
    if cfg.run_dir is not None:
        runs = run_dirs(Path(cfg.run_dir))
    else:
        runs = [Path(cfg.ckpt_path).resolve().parent.parent]
    results = {}
    for run in runs:
        run_cfg, module, datamodule, ckpt = load_run(run, cfg.ckpt_path if len(runs) == 1 else None)
        given = {k: v for k, v in (cfg.get("evaluation") or {}).items() if v is not None}
        run_cfg.evaluation = OmegaConf.merge(run_cfg.get("evaluation") or {}, given)
        loggers = []
        if cfg.wandb:
            loggers = [
                wandb_logger(
                    save_dir=str(run),
                    project=run_cfg.logger.get("wandb", {}).get("project", "dm2gal"),
                    job_type="evaluate",
                    group=OmegaConf.select(run_cfg, "logger.wandb.group"),
                )
            ]
        out = Path(cfg.out_dir) if cfg.out_dir and len(runs) == 1 else run
        try:
            results[str(run)] = evaluate_run(
                module, datamodule, run_cfg, out, loggers=loggers, checkpoint=str(ckpt), hods=hods
            )
        finally:
            for lg in loggers:
                lg.experiment.finish()
    if len(runs) > 1:
        from dm2gal.sweep import aggregate

        aggregate(Path(cfg.run_dir))
    return results
