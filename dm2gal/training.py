"""The training pipeline behind ``train.py``: config -> objects -> fit -> test -> evaluation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dm2gal.config import require_positive

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a group such as ``callbacks`` or ``logger``."""
    if not cfg:
        return []
    return [
        instantiate(node)
        for node in cfg.values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def check_config(cfg: DictConfig) -> None:
    """Raise one clear error naming the key for values that cannot work."""
    require_positive(
        cfg,
        "data.crop",
        "data.batch_size",
        "data.source.box",
        "data.source.grid",
        "data.source.particles",
        "trainer.max_epochs",
        "evaluation.tile",
    )
    grid = OmegaConf.select(cfg, "data.source.grid")
    crop = OmegaConf.select(cfg, "data.crop")
    if grid is not None and crop is not None and crop > grid:
        raise ValueError(f"config key 'data.crop' = {crop} is larger than the grid ({grid} voxels)")


def build(cfg: DictConfig) -> tuple[Any, L.LightningModule, L.Trainer]:
    """Build the data module, the Lightning module and the trainer from a composed config."""
    check_config(cfg)
    net = instantiate(cfg.model)
    if not net.valid_output(cfg.data.crop):
        raise ValueError(
            f"config key 'data.crop' = {cfg.data.crop} is not an output size that "
            f"model {type(net).__name__} accepts (fixed output: {net.fixed_output})"
        )
    sampler = instantiate(cfg.sampler) if cfg.get("sampler") else None
    datamodule = instantiate(cfg.data, context=net.context, sampler=sampler)
    module = instantiate(cfg.module, net=net, loss=instantiate(cfg.loss))
    trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_group(cfg.get("callbacks")),
        logger=instantiate_group(cfg.get("logger")) or False,
    )
    return datamodule, module, trainer


def log_config(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Send the whole resolved config, flattened, to every logger."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(container)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint, else the last one, else ``None``."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    for path in (callback.best_model_path, callback.last_model_path):
        if path and Path(path).is_file():
            return path
    return None


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test and evaluate; return the final metrics (floats)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    log_config(cfg, trainer)
    if cfg.train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test:
        ckpt = best_checkpoint(trainer)
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if trainer.is_global_zero:
            from dm2gal.evaluation import evaluate_run

            metrics.update(
                evaluate_run(
                    module,
                    datamodule,
                    cfg,
                    Path(cfg.paths.output_dir),
                    loggers=trainer.loggers,
                    checkpoint=ckpt,
                )
            )
    return metrics


def finish_loggers() -> None:
    """Close the W&B run even when training failed, so a sweep's next job starts clean."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def torch_settings() -> None:
    """Use the fast float32 matmul path on GPUs that have one."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
