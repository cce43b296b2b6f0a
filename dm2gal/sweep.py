"""Multirun aggregation: one comparison table (CSV + Markdown) and a plot for a sweep.

``python -m dm2gal.sweep <multirun_dir>`` (or :func:`aggregate`) reads every run directory of a
Hydra multirun folder: its overrides (``.hydra/overrides.yaml``), its final metrics
(``results.json`` written by :func:`dm2gal.training.train`, else the last values of
``csv/metrics.csv``) and its test-region statistics (``evaluation/metrics.json``, as
``eval/<field>/<statistic>``) when present. A run is ``ok`` when training completed, ``failed``
when it recorded an error or left no metrics, ``incomplete`` when it has metrics but no result
(still running, or killed). Writes ``sweep.csv``, ``sweep.md`` and ``sweep.png`` into the folder;
after an Optuna study (``hparams_search=optuna``) ``sweep.md`` ends with its best trial.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dm2gal.io.store import atomic_path, atomic_write_text

FIT_SPLITS = ("train", "val", "test")
STUDY = "optimization_results.yaml"  # written by the Optuna sweeper
PLOT_METRICS = (
    "val/loss",
    "test/loss",
    "eval/model/log_rmse",
    "eval/model/pk_ratio_abs_err",
    "eval/model_calibrated/pk_ratio_abs_err",
    "eval/model/rk_mean",
)


@dataclass
class SweepTable:
    """The aggregated sweep: ``rows`` (one dict per run) over ``columns``, and where the table
    and the plot were written."""

    columns: list[str]
    rows: list[dict[str, Any]]
    overrides: list[str] = field(default_factory=list)
    csv: Path | None = None
    markdown: Path | None = None
    plot: Path | None = None
    study: dict[str, Any] | None = None

    def column(self, name: str) -> list[Any]:
        """The values of one column, ``None`` where a run has none."""
        return [row.get(name) for row in self.rows]


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(multirun_dir: Path) -> list[Path]:
    """Run directories (those holding ``.hydra/overrides.yaml``) under ``multirun_dir``, in job
    order; a run directory itself gives ``[multirun_dir]``."""
    multirun_dir = Path(multirun_dir)
    if not multirun_dir.is_dir():
        raise FileNotFoundError(f"{multirun_dir}: multirun directory not found")
    runs = {
        p.parent.parent
        for p in multirun_dir.glob("**/.hydra/overrides.yaml")
        if ".submitit" not in p.parts
    }
    if not runs:
        raise FileNotFoundError(f"{multirun_dir}: no run directory (*/.hydra/overrides.yaml)")
    return sorted(runs, key=_natural_key)


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
    return {
        f"eval/{name}/{key}": number
        for name, values in models.items()
        for key, value in values.items()
        if (number := _float(value)) is not None
    }


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


def plot_sweep(table: SweepTable, path: Path, metrics: tuple[str, ...] = PLOT_METRICS) -> Path:
    """Bar charts, one panel per metric present, one bar per run labelled by its varying
    overrides; failed runs are marked in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in metrics if any(v is not None for v in table.column(m))]
    shown = shown or ["status"]
    varying = [k for k in table.overrides if len(set(map(str, table.column(k)))) > 1]
    labels = ["\n".join(f"{k}={row.get(k)}" for k in varying) or row["run"] for row in table.rows]
    x = range(len(table.rows))
    fig, axes = plt.subplots(
        1, len(shown), figsize=(2 + 1.2 * len(x) * len(shown), 4), squeeze=False
    )
    for ax, metric in zip(axes[0], shown, strict=True):
        values = [v if isinstance(v, float) else math.nan for v in table.column(metric)]
        colors = ["C0" if row["status"] == "ok" else "C3" for row in table.rows]
        ax.bar(x, values, color=colors)
        for i, row in enumerate(table.rows):
            if row["status"] != "ok":
                ax.text(i, 0, row["status"], rotation=90, ha="center", va="bottom", color="C3")
        ax.set_title(metric)
        ax.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def aggregate(multirun_dir: Path, out_dir: Path | None = None) -> SweepTable:
    """Aggregate every run of ``multirun_dir`` into ``sweep.csv``, ``sweep.md`` and
    ``sweep.png`` in ``out_dir`` (default: ``multirun_dir``); return the table."""
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
    table = SweepTable(columns, rows, overrides)
    table.csv = out / "sweep.csv"
    atomic_write_text(table.csv, to_csv(columns, rows))
    table.markdown = out / "sweep.md"
    table.study = read_study(root)
    study = study_markdown(table.study) if table.study else ""
    atomic_write_text(table.markdown, to_markdown(columns, rows) + study)
    table.plot = plot_sweep(table, out / "sweep.png")
    return table


def main(argv: list[str] | None = None) -> None:
    """``python -m dm2gal.sweep <multirun_dir> [--out DIR]``: write and print the table."""
    parser = argparse.ArgumentParser(prog="python -m dm2gal.sweep", description=__doc__)
    parser.add_argument("multirun_dir", type=Path, help="a Hydra multirun directory")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: same)")
    args = parser.parse_args(argv)
    table = aggregate(args.multirun_dir, args.out)
    print(table.markdown.read_text())
    print(f"wrote {table.csv}, {table.markdown}, {table.plot}")


if __name__ == "__main__":
    main()
