"""The training pipeline behind ``train.py``: config -> objects -> fit -> test -> evaluation."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dm2gal.io.store import atomic_write_text
from dm2gal.train.build import build
from dm2gal.train.loggers import find_wandb

log = logging.getLogger(__name__)

#: ``evaluate(module, datamodule, cfg, run_dir, loggers, checkpoint) -> metrics``
Evaluate = Callable[[L.LightningModule, Any, DictConfig, Path, Sequence[Any], str | None], dict]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (lists are values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def log_config(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Send the whole resolved config, flattened (``data/source/grid``), to every logger."""
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    for logger in trainer.loggers:
        logger.log_hyperparams(params)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint, else the last one, else ``None``."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    for path in (callback.best_model_path, callback.last_model_path):
        if path and Path(path).is_file():
            return path
    return None


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path`` if set, else the run's own ``checkpoints/last.ckpt`` when it exists (a
    requeued or restarted job continues where it stopped), else ``None``."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    return None


def with_sweep_info(cfg: DictConfig) -> DictConfig:
    """In a Hydra multirun, group the W&B runs by the sweep's id (the sweep directory's name)
    and tag each with its overrides. Other runs are returned unchanged."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    if wandb_cfg is None or not HydraConfig.initialized():
        return cfg
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return cfg
    with open_dict(cfg):
        if wandb_cfg.get("group") is None:
            wandb_cfg.group = Path(hydra_cfg.sweep.dir).name
        tags = list(wandb_cfg.get("tags") or [])
        wandb_cfg.tags = tags + [o[:64] for o in hydra_cfg.overrides.task if o not in tags]
    return cfg


def log_best_checkpoint(trainer: L.Trainer, path: str | None) -> None:
    """Record the best checkpoint's path with every logger (W&B: in the run summary)."""
    if path is None:
        return
    wandb = find_wandb(trainer.loggers)
    for logger in trainer.loggers:
        if logger is wandb:
            logger.experiment.summary["best_checkpoint"] = path
        else:
            logger.log_hyperparams({"best_checkpoint": path})


def train(cfg: DictConfig, evaluate: Evaluate | None = None) -> dict[str, float]:
    """Fit (resuming from ``resume_checkpoint``), test, then ``evaluate`` the tested module (the
    held-out evaluation, :func:`dm2gal.eval.evaluation.evaluate_run`, passed in by ``train.py``);
    return the final metrics. The global-zero process writes ``<output_dir>/results.json`` (see
    :func:`write_results`).
    """
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(with_sweep_info(cfg))
    log_config(cfg, trainer)
    if cfg.train:
        # our own checkpoints hold the partial optimiser / scheduler configs: trusted pickles
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg), weights_only=False
        )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt = best_checkpoint(trainer)
    log_best_checkpoint(trainer, ckpt)
    if cfg.test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if trainer.is_global_zero and evaluate is not None:
            run_dir = Path(cfg.paths.output_dir)
            metrics.update(evaluate(module, datamodule, cfg, run_dir, trainer.loggers, ckpt))
    if trainer.is_global_zero:
        write_results(
            cfg.paths.output_dir,
            "completed",
            metrics=metrics,
            global_step=trainer.global_step,
            best_checkpoint=ckpt,
        )
    return metrics


def write_results(output_dir: str | Path, status: str, **fields: Any) -> Path:
    """Write ``<output_dir>/results.json``: ``status`` ("completed" or "failed") plus ``fields``
    (final metrics, global step, best checkpoint, or the error). Sweep aggregation reads it."""
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"status": status, **fields}, indent=2, sort_keys=True))
    return path


def run(cfg: DictConfig, evaluate: Evaluate | None = None) -> dict[str, float]:
    """:func:`train`, recording a failure in ``results.json`` before re-raising it, and closing
    the W&B run whatever happens (a sweep's next job starts clean)."""
    try:
        return train(cfg, evaluate)
    except Exception as err:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            write_results(cfg.paths.output_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        finish_loggers()


def finish_loggers() -> None:
    """Close the W&B run even when training failed, so a sweep's next job starts clean."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def torch_settings() -> None:
    """Use the fast float32 matmul path on GPUs that have one."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
