"""The training pipeline behind ``train.py``: config -> objects -> fit -> test -> evaluation."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from dm2gal.cli import multirun
from dm2gal.infer.recipe import write_run_recipe
from dm2gal.io.store import atomic_write_text
from dm2gal.stats.field_kinds import HEADLINE_FIELDS, headline_field, is_draw
from dm2gal.train.build import build
from dm2gal.train.callbacks import DivergedError
from dm2gal.train.checkpoints import resume_point
from dm2gal.train.loggers import find_wandb

log = logging.getLogger(__name__)

#: ``evaluate(module, datamodule, cfg, run_dir, loggers, checkpoint) -> metrics``
Evaluate = Callable[[L.LightningModule, Any, DictConfig, Path, Sequence[Any], str | None], dict]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def group_choices() -> dict[str, str | None]:
    """The option chosen in each config group (``{"model": "unet3d", "data.loader": ...}``,
    Hydra's own groups left out); empty outside a Hydra app."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k.replace("/", "."): v for k, v in choices.items() if not k.startswith("hydra")}


def config_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flat with dotted names (``sampler.bins``, ``data.source.grid``) plus
    the option chosen in each group under the group's name (``model``: ``unet3d``, ``loss``:
    ``mse``): the runs table of W&B gets one column per setting and per choice. A group's
    values always sit below its name (``model.depth``), so the two never share a key, except a
    group chosen empty (``callbacks: none``), where the choice is kept."""
    return flatten(OmegaConf.to_container(cfg, resolve=True)) | group_choices()


def log_config(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Send :func:`config_params` to every logger."""
    params = config_params(cfg)
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
    """``ckpt_path`` if it names a file; else (``null`` or ``last``) the run's own
    ``checkpoints/last.ckpt``, or ``last-1.ckpt`` when that one is damaged (a requeued or
    restarted job continues where it stopped; see :func:`~dm2gal.train.checkpoints.resume_point`),
    else ``None`` (``last`` then raises)."""
    chosen = cfg.get("ckpt_path")
    if chosen and chosen != "last":
        return str(chosen)
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    path = resume_point(ckpt_dir, required=chosen == "last", trust=cfg.trust_checkpoint)
    if path is None:
        return None
    log.info("resuming from %s", path)
    return str(path)


def with_sweep_info(cfg: DictConfig) -> DictConfig:
    """In a Hydra multirun, group the W&B runs by the sweep's id (the sweep directory's name)
    and tag each with its overrides. Other runs are returned unchanged."""
    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    if wandb_cfg is None or not multirun():
        return cfg
    hydra_cfg = HydraConfig.get()
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
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg))
    write_run_recipe(cfg.paths.output_dir, datamodule, trainer.is_global_zero)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt = best_checkpoint(trainer)
    log_best_checkpoint(trainer, ckpt)
    if cfg.test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
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
        if cfg.test:
            run_dir = cfg.paths.output_dir
            log.info("\n%s", summary_table(metrics, run_dir, read_realisations(run_dir)))
    return metrics


#: columns of the end-of-run table, (metric, header), each shown when some field has it: the
#: k-band scores (large k <= 1 h/Mpc, intermediate) when the evaluation gives them, and all-k means
SUMMARY_COLUMNS = (
    ("pk_ratio_abs_err_large", "P err k<=1"),
    ("pk_ratio_abs_err_intermediate", "P err mid"),
    ("pk_ratio_abs_err", "P err"),
    ("bk_ratio_abs_err", "B err"),
    ("rk_mean_large", "r k<=1"),
    ("rk_mean_intermediate", "r mid"),
    ("rk_mean", "r"),
    ("total_mass_rel_err", "total M*"),
)
SPLITS = ("train", "val", "test")


def summary_table(
    metrics: Mapping[str, float],
    run_dir: str | Path,
    realisations: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> str:
    """The end-of-run table: one row per field (the headline network field first, then the raw
    network, HODs, oracles), one column per :data:`SUMMARY_COLUMNS` metric, and the run directory.

    ``metrics`` are the evaluation's ``{"<field>/<metric>": value}`` on the test region (the
    training metrics ``train/...``, ``val/...``, ``test/...`` are left out); ``realisations``
    (``{field: {metric: {"mean", "std", ...}}}``, ``realisations.json``), when given, is shown
    instead, as ``mean ± std`` over the whole-box realisations.
    """
    table: dict[str, dict[str, str]] = {}
    if realisations:
        source = "mean ± std over the realisations"
        for field, values in realisations.items():
            for metric, stat in values.items():
                if isinstance(stat, Mapping) and {"mean", "std"} <= set(stat):
                    cell = _number(metric, stat["mean"], stat["std"])
                    table.setdefault(field, {})[metric] = cell
    else:
        source = "test region"
        for key, value in metrics.items():
            field, _, metric = key.partition("/")
            if field not in SPLITS and metric and "/" not in metric:
                table.setdefault(field, {})[metric] = _number(metric, value)
    columns = [(m, h) for m, h in SUMMARY_COLUMNS if any(m in row for row in table.values())]
    headline = headline_field(table)
    # means, then draws (like beside like); in each, the network fields in headline order (the
    # headline is the first present), then HODs, then the oracle
    order = {name: i for i, name in enumerate(HEADLINE_FIELDS)}

    def rank(field: str) -> tuple:
        if field.startswith("model"):
            role = order.get(field, len(order))
        else:
            role = len(order) + (1 if field.startswith("hod") else 2)
        return is_draw(field), role, field

    fields = sorted((f for f in table if any(m in table[f] for m, _ in columns)), key=rank)
    lines = [
        f"| field ({source}) | " + " | ".join(h for _, h in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for field in fields:
        name = f"{field} (headline)" if field == headline else field
        cells = " | ".join(table[field].get(m, "") for m, _ in columns)
        lines.append(f"| {name} | {cells} |")
    lines.append(f"run directory: {Path(run_dir).resolve()}")
    return "\n".join(lines)


def _number(metric: str, value: float, std: float | None = None) -> str:
    """A table cell: the total-mass error in percent, other metrics with three decimals."""
    scale, unit, digits = (100.0, "%", 1) if metric == "total_mass_rel_err" else (1.0, "", 3)
    text = f"{value * scale:+.{digits}f}{unit}" if unit else f"{value * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}{unit}"


def read_realisations(run_dir: str | Path) -> dict | None:
    """``<run_dir>/evaluation/realisations.json`` when the evaluation wrote it, else None."""
    path = Path(run_dir) / "evaluation" / "realisations.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_results(output_dir: str | Path, status: str, **fields: Any) -> Path:
    """Write ``<output_dir>/results.json``: ``status`` ("completed", "diverged" or "failed") plus
    ``fields`` (final metrics, global step, best checkpoint, or the error). Sweep aggregation
    reads it."""
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"status": status, **fields}, indent=2, sort_keys=True))
    return path


def run(cfg: DictConfig, evaluate: Evaluate | None = None) -> dict[str, float]:
    """:func:`train`, recording a failure (status "failed", or "diverged" with the global step
    not taken) in ``results.json`` before re-raising it, and closing the W&B run whatever
    happens (a sweep's next job starts clean)."""
    try:
        return train(cfg, evaluate)
    except Exception as err:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            error = f"{type(err).__name__}: {err}"
            if isinstance(err, DivergedError):
                write_results(cfg.paths.output_dir, "diverged", error=error, global_step=err.step)
            else:
                write_results(cfg.paths.output_dir, "failed", error=error)
        raise
    finally:
        finish_loggers()


def finish_loggers() -> None:
    """Close the W&B run even when training failed, so a sweep's next job starts clean."""
    import wandb  # lazy: optional on GPU machines, slow to import

    if wandb.run is not None:
        wandb.finish()


def torch_settings() -> None:
    """Use the fast float32 matmul path on GPUs that have one."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
