"""Multirun aggregation: one comparison table (CSV + Markdown) and a plot for a sweep.

``python -m dm2gal.sweep dir=<multirun_dir>`` (or :func:`aggregate`) reads every run directory of a
Hydra multirun folder: its overrides (``.hydra/overrides.yaml``), its final metrics
(``results.json`` written by :func:`dm2gal.train.pipeline.train`, else the last values of
``csv/metrics.csv``) and its test-region statistics (``evaluation/metrics.json``, as
``eval/<field>/<statistic>``) when present. A run is ``ok`` when training completed, ``failed``
when it recorded an error or left no metrics, ``incomplete`` when it has metrics but no result
(still running, or killed). Writes ``sweep.csv``, ``sweep.md`` and ``sweep.png`` into the folder.
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
import yaml
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.io.store import atomic_path, atomic_write_text
from dm2gal.train.runs import find_runs

FIT_SPLITS = ("train", "val", "test")
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

    def column(self, name: str) -> list[Any]:
        """The values of one column, ``None`` where a run has none."""
        return [row.get(name) for row in self.rows]


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
    atomic_write_text(table.markdown, to_markdown(columns, rows))
    table.plot = plot_sweep(table, out / "sweep.png")
    return table


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    """Write the table and plot of ``cfg.dir`` (``conf/sweep.yaml``) and print the table."""
    table = aggregate(Path(cfg.dir), Path(cfg.out) if cfg.out else None)
    print(table.markdown.read_text())
    print(f"wrote {table.csv}, {table.markdown}, {table.plot}")


if __name__ == "__main__":
    main()
