"""A sweep's runs -> ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (and a W&B run)."""

from __future__ import annotations

from pathlib import Path

from dm2gal.io.store import atomic_write_text
from dm2gal.sweep.plots import plot_sweep
from dm2gal.sweep.runs import objective_of, read_config, read_overrides, run_row
from dm2gal.sweep.study import read_study, study_markdown
from dm2gal.sweep.table import SweepTable, headline_view, to_csv, to_markdown
from dm2gal.sweep.wandb_log import log_to_wandb
from dm2gal.train.runs import find_runs


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
