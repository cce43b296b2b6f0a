"""``sweep.png``: every run's P(k) ratio and r(k) over the references, and bars of the headline
scores."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dm2gal.eval.headline import is_reference, read_columns
from dm2gal.eval.plots import save_png
from dm2gal.stats.field_kinds import headline_field
from dm2gal.sweep.table import SweepTable, eval_fields, references

#: the whole-range scores drawn as bar panels (besides the optimised metric)
BAR_METRICS = ("pk_ratio_abs_err", "rk_mean", "bk_ratio_abs_err")


def _reference_style(name: str) -> dict[str, Any]:
    return {"color": "k", "ls": "--" if name.startswith("oracle_") else "-", "lw": 1.2}


def plot_curves(ax: Axes, table: SweepTable, stem: str, prefix: str) -> bool:
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


def plot_bars(ax: Axes, table: SweepTable, metric: str) -> None:
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
    if plot_curves(pk_ax, table, "pk", "ratio_"):
        pk_ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="P(k) / P_truth(k)")
        pk_ax.set_title("P(k) ratio, test region", fontsize=10)
    if plot_curves(rk_ax, table, "rk", "r_"):
        rk_ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="r(k) with truth")
        rk_ax.set_title("cross-correlation r(k), test region", fontsize=10)
    for ax, metric in zip(bottom.subplots(1, len(bars), squeeze=False)[0], bars, strict=True):
        if metric == "status":
            ax.set_title("no metric recorded", fontsize=9)
            continue
        plot_bars(ax, table, metric)
    save_png(fig, path)
    return path
