"""What one run directory of a sweep holds: its overrides, final metrics (``results.json``, else
the last values of ``csv/metrics.csv``), evaluation scores with the network-minus-HOD margins,
composed config and optimised metric, as one table row."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

from dm2gal.errors import ConfigError, UserError
from dm2gal.eval.headline import margins, nest
from dm2gal.train.runs import find_runs

FIT_SPLITS = ("train", "val", "test")
#: how ``callbacks.model_checkpoint.mode`` ranks the optimised metric
ORDER_MODES = ("min", "max")


class RunFileError(UserError, ValueError):
    """A file of a run directory (overrides, results, config) that does not hold what a run
    writes there; the message names the file."""


def read_overrides(run_dir: Path) -> dict[str, str]:
    """``{key: value}`` of the run's command-line overrides (``+``/``~`` prefixes dropped)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise RunFileError(f"{path}: expected a list of 'key=value' overrides, got {items!r}")
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def read_csv_metrics(run_dir: Path) -> dict[str, float]:
    """Last logged value of every metric column of ``csv/metrics.csv`` (empty if absent)."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                number = _float(value)
                if key not in ("epoch", "step") and number is not None:
                    out[key] = number
    return out


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """``results.json`` of a run (status, metrics, global_step, best_checkpoint or error)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFileError(f"{path}: not valid JSON ({err})") from err


def read_evaluation(run_dir: Path) -> dict[str, float]:
    """``eval/<field>/<statistic>`` from ``evaluation/metrics.json`` (empty if absent)."""
    path = Path(run_dir) / "evaluation" / "metrics.json"
    if not path.is_file():
        return {}
    models = json.loads(path.read_text()).get("models", {})
    out = {
        f"eval/{name}/{key}": number
        for name, values in models.items()
        for key, value in values.items()
        if (number := _float(value)) is not None
    }
    scores = nest({k.removeprefix("eval/"): v for k, v in out.items()})
    return out | {f"eval/margin/{k}": v for k, v in margins(scores).items()}


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config (``.hydra/config.yaml``; empty if absent)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise RunFileError(f"{path}: expected a mapping, got {type(config).__name__}")
    return config


def objective_of(configs: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The first run's ``optimized_metric`` and its checkpoint ``mode`` (``min`` / ``max``)."""
    for config in configs:
        if config.get("optimized_metric"):
            checkpoint = (config.get("callbacks") or {}).get("model_checkpoint") or {}
            mode = checkpoint.get("mode", "min")
            if mode not in ORDER_MODES:
                raise ConfigError(f"callbacks.model_checkpoint.mode must be min or max, got {mode}")
            return str(config["optimized_metric"]), mode
    return None, "min"


def run_row(run_dir: Path, root: Path) -> dict[str, Any]:
    """One table row: run, status, overrides, final metrics, evaluation metrics, error."""
    results = read_results(run_dir)
    if results and results.get("metrics"):
        metrics = {
            k: number
            for k, v in results["metrics"].items()
            if k.split("/")[0] in FIT_SPLITS and (number := _float(v)) is not None
        }
    else:
        metrics = read_csv_metrics(run_dir)
    row: dict[str, Any] = {"run": str(run_dir.relative_to(root))}
    if results is not None and results.get("status") == "completed":
        row["status"], error = "ok", None
    elif results is not None:
        row["status"], error = "failed", results.get("error", "failed")
    elif metrics:
        row["status"], error = "incomplete", "no results.json (running or killed)"
    else:
        row["status"], error = "failed", "no metrics"
    row.update(read_overrides(run_dir))
    row.update(metrics)
    row.update(read_evaluation(run_dir))
    if results is not None and "global_step" in results:
        row["global_step"] = results["global_step"]
    row["error"] = error
    return row


def logged_to_wandb(multirun_dir: Path) -> bool:
    """Whether the sweep's runs logged to W&B (a ``logger.wandb`` node in the first run's
    config)."""
    runs = find_runs(Path(multirun_dir))
    return bool(runs) and bool((read_config(runs[0]).get("logger") or {}).get("wandb"))
