"""Multirun aggregation: one comparison table (CSV + Markdown) and a plot for a sweep.

``python -m dm2gal.sweep dir=<multirun_dir>`` (or :func:`aggregate`) reads every run directory of a
Hydra multirun folder: its overrides (``.hydra/overrides.yaml``), its final metrics
(``results.json`` written by :func:`dm2gal.train.pipeline.train`, else the last values of
``csv/metrics.csv``) and its test-region statistics (``evaluation/metrics.json``, as
``eval/<field>/<statistic>``, plus the network-minus-HOD margins ``eval/margin/<statistic>``)
when present. A run is ``ok`` when training completed, ``failed`` when it recorded an error or
left no metrics, ``incomplete`` when it has metrics but no result (still running, or killed).

Writes into the folder: ``sweep.csv`` (every column), ``sweep.md`` (the view to read: the swept
keys and the headline scores of :mod:`dm2gal.eval.headline`, runs sorted by each run's
``optimized_metric``, the HODs and the oracle once as reference rows) and ``sweep.png`` (every
run's P(k) ratio and r(k) over the references, and bars of the headline scores with the
references as lines). :func:`log_to_wandb` logs the table to a W&B run of the sweep's group.
After an Optuna study (``hparams_search=optuna``) ``sweep.md`` ends with its best trial.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.eval.headline import (
    headline_field,
    headline_metrics,
    is_reference,
    margins,
    nest,
    read_columns,
)
from dm2gal.eval.plots import save_png
from dm2gal.io.store import atomic_write_text
from dm2gal.train.loggers import wandb_logger
from dm2gal.train.runs import find_runs

FIT_SPLITS = ("train", "val", "test")
#: the whole-range scores drawn as bar panels (besides the optimised metric)
BAR_METRICS = ("pk_ratio_abs_err", "rk_mean", "bk_ratio_abs_err")
#: how ``callbacks.model_checkpoint.mode`` ranks the optimised metric
ORDER_MODES = ("min", "max")
STUDY = "optimization_results.yaml"  # written by the Optuna sweeper


@dataclass
class SweepTable:
    """The aggregated sweep of the multirun folder ``root``: ``rows`` (one dict per run) over
    ``columns``, the runs' ``optimized_metric`` (``objective``, ranked by ``mode``), and where
    the tables and the plot were written."""

    columns: list[str]
    rows: list[dict[str, Any]]
    overrides: list[str] = field(default_factory=list)
    objective: str | None = None
    mode: str = "min"
    root: Path = Path(".")
    csv: Path | None = None
    markdown: Path | None = None
    plot: Path | None = None
    study: dict[str, Any] | None = None

    def column(self, name: str) -> list[Any]:
        """The values of one column, ``None`` where a run has none."""
        return [row.get(name) for row in self.rows]

    @property
    def swept(self) -> list[str]:
        """The overrides whose value differs between runs (all of them for a single run)."""
        if len(self.rows) < 2:
            return list(self.overrides)
        return [k for k in self.overrides if len({str(v) for v in self.column(k)}) > 1]

    def label(self, row: dict[str, Any]) -> str:
        """A run's swept values (``model=unet3d, loss=mse``), else its directory."""
        return ", ".join(f"{k}={row.get(k)}" for k in self.swept) or row["run"]

    def sorted_rows(self) -> list[dict[str, Any]]:
        """The rows by :attr:`objective` (best first, per :attr:`mode`), rows without it last."""
        if self.objective is None:
            return list(self.rows)
        sign = 1.0 if self.mode == "min" else -1.0
        scored = [r for r in self.rows if isinstance(r.get(self.objective), float)]
        rest = [r for r in self.rows if not isinstance(r.get(self.objective), float)]
        return sorted(scored, key=lambda r: sign * r[self.objective]) + rest


def read_overrides(run_dir: Path) -> dict[str, str]:
    """``{key: value}`` of the run's command-line overrides (``+``/``~`` prefixes dropped)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of 'key=value' overrides, got {items!r}")
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
        raise ValueError(f"{path}: not valid JSON ({err})") from err


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
        raise ValueError(f"{path}: expected a mapping, got {type(config).__name__}")
    return config


def objective_of(configs: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The first run's ``optimized_metric`` and its checkpoint ``mode`` (``min`` / ``max``)."""
    for config in configs:
        if config.get("optimized_metric"):
            checkpoint = (config.get("callbacks") or {}).get("model_checkpoint") or {}
            mode = checkpoint.get("mode", "min")
            if mode not in ORDER_MODES:
                raise ValueError(f"callbacks.model_checkpoint.mode must be min or max, got {mode}")
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


def read_study(multirun_dir: Path) -> dict[str, Any] | None:
    """The Optuna sweeper's ``optimization_results.yaml`` (``best_params``, ``best_value``, or
    ``solutions`` for several objectives), or ``None`` for other sweeps."""
    path = Path(multirun_dir) / STUDY
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def study_markdown(study: dict[str, Any]) -> str:
    """One line per best trial of an Optuna study: its value(s) and parameters."""
    best = study.get("solutions") or [
        {"values": [study["best_value"]], "params": study["best_params"]}
    ]
    lines = [
        "Optuna best: "
        + ", ".join(_format(v) for v in trial["values"])
        + " at "
        + " ".join(f"{k}={_format(v)}" for k, v in trial["params"].items())
        for trial in best
    ]
    return "\n" + "\n".join(lines) + "\n"


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_format(row.get(c)).replace("|", "\\|").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """CSV text, empty cells where a run has no value."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return buf.getvalue()


def eval_fields(rows: list[dict[str, Any]]) -> list[str]:
    """The evaluated fields (``model``, ``hod_binned``, ...) in order of first appearance."""
    out: dict[str, None] = {}
    for row in rows:
        for key in row:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[1] != "margin":
                out[parts[1]] = None
    return list(out)


def references(table: SweepTable) -> dict[str, dict[str, Any]]:
    """``{field: row}`` of each reference field (HOD, oracle): the first run that has it."""
    out: dict[str, dict[str, Any]] = {}
    for name in eval_fields(table.rows):
        if is_reference(name):
            out[name] = next(r for r in table.rows if any(k.startswith(f"eval/{name}/") for k in r))
    return out


def headline_view(table: SweepTable) -> tuple[list[str], list[dict[str, Any]]]:
    """The table to read: run, field, status, the swept keys, the optimised metric and the
    headline scores of each network field (one row per run and field, sorted by the optimised
    metric), with each reference field (HOD, oracle) once as a row on top."""
    fields = eval_fields(table.rows)
    metrics = headline_metrics(
        key.split("/")[2] for row in table.rows for key in row if key.count("/") == 2
    )
    metrics = [m for m in metrics if any(f"eval/{f}/{m}" in r for r in table.rows for f in fields)]
    objective = [table.objective] if table.objective in table.columns else []
    columns = ["run", *(["field"] if fields else []), "status", *table.swept, *objective, *metrics]
    rows = [
        {"run": "", "field": name, "status": "reference"}
        | {m: row.get(f"eval/{name}/{m}") for m in metrics}
        for name, row in references(table).items()
    ]
    for row in table.sorted_rows():
        base = {c: row.get(c) for c in ("run", "status", *table.swept, *objective)}
        networks = [
            f
            for f in fields
            if not is_reference(f) and any(k.startswith(f"eval/{f}/") for k in row)
        ]
        for name in networks:
            rows.append(base | {"field": name} | {m: row.get(f"eval/{name}/{m}") for m in metrics})
        if not networks:
            rows.append(base)
    return columns, rows


def _reference_style(name: str) -> dict[str, Any]:
    return {"color": "k", "ls": "--" if name.startswith("oracle_") else "-", "lw": 1.2}


def _plot_curves(ax: Axes, table: SweepTable, stem: str, prefix: str) -> bool:
    """Overlay the headline network column (:func:`headline_field`: ``<prefix>model_mean``,
    ``...model_calibrated`` or ``...model``) of every run's ``evaluation/<stem>.csv`` over the
    reference columns (HODs, oracle) of the first; False when no run has the file."""
    tables = [
        (row, read_columns(path))
        for row in table.sorted_rows()
        if (path := table.root / row["run"] / "evaluation" / f"{stem}.csv").is_file()
    ]
    if not tables:
        return False
    ax.axhline(1.0, color="0.6", lw=0.8, zorder=0)
    first = tables[0][1]
    for name in first:
        if name.startswith(prefix) and is_reference(ref := name.removeprefix(prefix)):
            ax.semilogx(first["k"], first[name], label=ref, **_reference_style(ref))
    for row, columns in tables:
        names = [c.removeprefix(prefix) for c in columns if c.startswith(prefix)]
        if network := headline_field(names):
            label = table.label(row) + ("" if network == "model" else f" ({network})")
            ax.semilogx(columns["k"], columns[f"{prefix}{network}"], label=label)
    ax.legend(fontsize=7)
    return True


def _plot_bars(ax: Axes, table: SweepTable, metric: str) -> None:
    """One bar per run (failed ones red and marked), each reference's value as a line."""
    rows = table.sorted_rows()
    values = [row.get(metric) if isinstance(row.get(metric), float) else math.nan for row in rows]
    colors = ["C0" if row["status"] == "ok" else "C3" for row in rows]
    x = np.arange(len(rows))
    ax.bar(x, values, color=colors)
    for i, row in enumerate(rows):
        if row["status"] != "ok":
            ax.text(i, 0, row["status"], rotation=90, ha="center", va="bottom", color="C3")
    name = metric.split("/")[-1]
    if metric.startswith("eval/"):
        for ref, row in references(table).items():
            if isinstance(value := row.get(f"eval/{ref}/{name}"), float):
                ax.axhline(value, label=ref, **_reference_style(ref))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    if metric.startswith("eval/"):
        ax.set_title(f"{name}\n({metric.split('/')[1]}, test region)", fontsize=9)
    else:
        ax.set_title(f"{metric}\n(optimised metric)", fontsize=9)
    ax.set_xticks(x, [table.label(r) for r in rows], rotation=45, ha="right", fontsize=7)


def plot_sweep(table: SweepTable, path: Path) -> Path:
    """Top: every run's P(k) ratio and r(k) with the references (HODs solid, oracle dashed);
    bottom: bars of the optimised metric and the headline network field's scores (the first
    run's :func:`headline_field`), references as lines.
    Runs are labelled by their swept values; failed runs are marked in red."""
    bars = [table.objective] if table.objective else []
    network = headline_field(eval_fields(table.rows)) or "model"
    bars += [f"eval/{network}/{m}" for m in BAR_METRICS]
    bars = [m for m in bars if any(isinstance(v, float) for v in table.column(m))] or ["status"]
    fig = Figure(figsize=(max(10.0, 3.2 * len(bars)), 8.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.0])
    pk_ax, rk_ax = top.subplots(1, 2)
    if _plot_curves(pk_ax, table, "pk", "ratio_"):
        pk_ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="P(k) / P_truth(k)")
        pk_ax.set_title("P(k) ratio, test region", fontsize=10)
    if _plot_curves(rk_ax, table, "rk", "r_"):
        rk_ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="r(k) with truth")
        rk_ax.set_title("cross-correlation r(k), test region", fontsize=10)
    for ax, metric in zip(bottom.subplots(1, len(bars), squeeze=False)[0], bars, strict=True):
        if metric == "status":
            ax.set_title("no metric recorded", fontsize=9)
            continue
        _plot_bars(ax, table, metric)
    save_png(fig, path)
    return path


def log_to_wandb(table: SweepTable, out: Path, columns: list[str], rows: list[dict]) -> None:
    """Log the sweep's full table (``sweep/runs``) and its headline view (``sweep/headline``)
    to a W&B run (job type ``sweep``) in the group of the sweep's runs (their
    ``logger.wandb.group``, else the multirun directory's name, as in training), offline unless
    an account is configured (:func:`dm2gal.train.loggers.wandb_logger`). Its id is kept in
    ``out/wandb_id.txt``: aggregating again updates the same W&B run."""
    import wandb  # lazy: optional on GPU machines, slow to import

    config = read_config(table.root / table.rows[0]["run"]) if table.rows else {}
    settings = (config.get("logger") or {}).get("wandb") or {}
    group = settings.get("group") or table.root.name
    logger = wandb_logger(
        save_dir=str(out),
        persist_id=True,
        project=settings.get("project", "dm2gal"),
        group=group,
        job_type="sweep",
        name=f"{group}-sweep",
    )
    run = logger.experiment
    try:
        run.log(
            {
                "sweep/runs": _wandb_table(wandb, table.columns, table.rows),
                "sweep/headline": _wandb_table(wandb, columns, rows),
            }
        )
    finally:
        run.finish()


def _wandb_table(wandb: Any, columns: list[str], rows: list[dict[str, Any]]) -> Any:
    """A ``wandb.Table`` of ``rows`` over ``columns``: numbers as numbers, other values as text."""

    def cell(value: Any) -> Any:
        return value if value is None or isinstance(value, int | float) else str(value)

    data = [[cell(row.get(c)) for c in columns] for row in rows]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)


def aggregate(multirun_dir: Path, out_dir: Path | None = None, wandb: bool = False) -> SweepTable:
    """Aggregate every run of ``multirun_dir`` into ``sweep.csv``, ``sweep.md`` and
    ``sweep.png`` in ``out_dir`` (default: ``multirun_dir``), and with ``wandb`` into a W&B
    run of the sweep's group (:func:`log_to_wandb`); return the table."""
    root = Path(multirun_dir)
    runs = find_runs(root)
    rows = [run_row(run, root) for run in runs]
    overrides: list[str] = []
    for run in runs:
        overrides += [k for k in read_overrides(run) if k not in overrides]
    metrics = sorted(
        {k for row in rows for k in row if "/" in k and not k.startswith("eval/")} - set(overrides)
    )
    evals = sorted({k for row in rows for k in row if k.startswith("eval/")})
    columns = ["run", "status", *overrides, *metrics, *evals, "global_step", "error"]
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    objective, mode = objective_of([read_config(run) for run in runs])
    table = SweepTable(columns, rows, overrides, objective, mode, root=root)
    table.csv = out / "sweep.csv"
    atomic_write_text(table.csv, to_csv(columns, rows))
    view_columns, view_rows = headline_view(table)
    table.markdown = out / "sweep.md"
    table.study = read_study(root)
    study = study_markdown(table.study) if table.study else ""
    atomic_write_text(table.markdown, to_markdown(view_columns, view_rows) + study)
    table.plot = plot_sweep(table, out / "sweep.png")
    if wandb:
        log_to_wandb(table, out, view_columns, view_rows)
    return table


def logged_to_wandb(multirun_dir: Path) -> bool:
    """Whether the sweep's runs logged to W&B (a ``logger.wandb`` node in the first run's
    config)."""
    runs = find_runs(Path(multirun_dir))
    return bool(runs) and bool((read_config(runs[0]).get("logger") or {}).get("wandb"))


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    """Write the table and plot of ``cfg.dir`` (``conf/sweep.yaml``), print the headline table;
    log to W&B when ``cfg.wandb`` says so (null: when the runs did)."""
    use_wandb = logged_to_wandb(Path(cfg.dir)) if cfg.wandb is None else bool(cfg.wandb)
    table = aggregate(Path(cfg.dir), Path(cfg.out) if cfg.out else None, wandb=use_wandb)
    print(table.markdown.read_text())
    print(f"wrote {table.csv}, {table.markdown}, {table.plot}")


if __name__ == "__main__":
    main()
