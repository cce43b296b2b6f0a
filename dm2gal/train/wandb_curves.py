"""Curves as W&B tables and line charts: what the validation callback logs each validation and
the evaluation logs once (:mod:`dm2gal.eval.wandb_tables`).

Each curve becomes a ``wandb.Table`` with one column per entry (one row per k, theta or PDF
bin), logged as ``<prefix>/curves/<curve>``; ``<prefix>/charts/pk_ratio`` and
``<prefix>/charts/rk`` are ``wandb.plot.line_series`` charts of every ``ratio_*`` and ``r_*``
column against k. ``wandb`` is imported inside the functions that build W&B objects: it is
optional on GPU machines (``tests/test_gpu_path.py``) and slow to import, and
:mod:`dm2gal.train.callbacks` imports this module on every training run, W&B or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: line charts: name -> (curve table, column prefix of the series, y-axis title)
CHARTS = {
    "pk_ratio": ("pk", "ratio_", "P(k) / P_truth(k)"),
    "rk": ("rk", "r_", "r(k) with truth"),
}

Columns = Mapping[str, np.ndarray]


def table(columns: Columns) -> Any:
    """A ``wandb.Table`` with one column per entry of ``columns`` (equal-length arrays)."""
    import wandb  # lazy: optional on GPU machines, slow to import

    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in names])
    return wandb.Table(columns=names, data=data.tolist())


def line_chart(columns: Columns, prefix: str, title: str) -> Any | None:
    """``wandb.plot.line_series`` of every ``<prefix><field>`` column against ``k`` (series
    named by field); None when ``columns`` has no such column."""
    import wandb  # lazy: optional on GPU machines, slow to import

    series = {n.removeprefix(prefix): columns[n] for n in columns if n.startswith(prefix)}
    if not series:
        return None
    return wandb.plot.line_series(
        xs=np.asarray(columns["k"]).tolist(),
        ys=[np.asarray(v).tolist() for v in series.values()],
        keys=list(series),
        title=title,
        xname="k [h/Mpc]",
    )


def curve_payload(prefix: str, curves: Mapping[str, Columns]) -> dict[str, Any]:
    """``{<prefix>/curves/<curve>: table, <prefix>/charts/pk_ratio: chart, ...}`` for a
    ``run.log`` call; ``curves`` maps a curve name to its columns (charts need ``pk`` with
    ``k`` and ``ratio_*`` columns, ``rk`` with ``k`` and ``r_*``)."""
    payload = {f"{prefix}/curves/{name}": table(columns) for name, columns in curves.items()}
    for chart, (curve, column_prefix, title) in CHARTS.items():
        if curve in curves:
            made = line_chart(curves[curve], column_prefix, title)
            if made is not None:
                payload[f"{prefix}/charts/{chart}"] = made
    return payload
