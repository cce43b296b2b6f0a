"""Headline scores of an evaluation: which scores compare runs, the network-minus-HOD margins,
and the report's curve tables read back from CSV.

Fields are named as in the report: ``truth``, the network's (``model``, ``model_calibrated``;
a probabilistic network's ``model_mean`` and ``model_draw``), and the references
(``hod_<name>_mean`` / ``_draw``, ``oracle_mean`` / ``_draw``). A score is headline when its
name is one of
:data:`HEADLINE` or one of them with a k-band suffix (``rk_mean_large``); everything else
(``k_max``, ``log_rmse``, ...) stays in the full tables.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from dm2gal.eval.aggregate import comparable, higher_is_better
from dm2gal.stats.field_kinds import headline_field, same_kind

#: the fidelity scores that compare runs, in column order (per band where the report has bands)
HEADLINE = (
    "pk_ratio_abs_err",
    "rk_mean",
    "decorrelation_ratio",
    "bk_ratio_abs_err",
    "total_mass_rel_err",
)
REFERENCE_PREFIXES = ("hod_", "oracle_")
#: report entries that are settings, not scores
NOT_SCORES = ("k_max",)


def is_reference(field: str) -> bool:
    """Whether ``field`` is a benchmark (an HOD or the mock's oracle), not a network."""
    return field.startswith(REFERENCE_PREFIXES)


def headline_base(metric: str) -> str | None:
    """The :data:`HEADLINE` score ``metric`` is (itself or a band of it), else None."""
    matches = [h for h in HEADLINE if metric == h or metric.startswith(f"{h}_")]
    return max(matches, key=len) if matches else None


def headline_metrics(metrics: Iterable[str]) -> list[str]:
    """The headline scores among ``metrics``, in :data:`HEADLINE` order; where a score has band
    variants (``rk_mean_large``, ...) the bands replace the whole-range value."""
    metrics = list(dict.fromkeys(metrics))
    out = []
    for base in HEADLINE:
        bands = [m for m in metrics if m != base and headline_base(m) == base]
        out += bands or [m for m in metrics if m == base]
    return out


def strongest_benchmark(
    scores: Mapping[str, Mapping[str, float]], model: str, metric: str
) -> str | None:
    """The HOD of ``model``'s kind (mean or draw, :mod:`dm2gal.stats.field_kinds`) with the best
    finite ``metric`` in ``scores``, else None."""
    candidates = [
        f
        for f, values in scores.items()
        if f.startswith("hod_")
        and same_kind(f, model)
        and metric in values
        and math.isfinite(float(values[metric]))
    ]
    if not candidates:
        return None
    sign = -1.0 if higher_is_better(metric) else 1.0
    return min(candidates, key=lambda f: sign * comparable(metric, float(scores[f][metric])))


def margins(
    scores: Mapping[str, Mapping[str, float]], model: str | None = None
) -> dict[str, float]:
    """``{metric: ours - theirs}`` of ``model`` against, per metric, the
    :func:`strongest_benchmark` of its kind, for every finite score (compared as
    :func:`dm2gal.eval.aggregate.comparable`: negative: the network's error is smaller; for
    ``rk_mean*``, positive: it correlates better); ``model`` defaults to the
    :func:`headline_field`. Empty without an HOD of its kind or without ``model``."""
    model = model or headline_field(scores)
    if model not in scores:
        return {}
    out = {}
    for metric, value in scores[model].items():
        if metric in NOT_SCORES or not math.isfinite(float(value)):
            continue
        reference = strongest_benchmark(scores, model, metric)
        if reference is not None:
            theirs = comparable(metric, float(scores[reference][metric]))
            out[metric] = comparable(metric, float(value)) - theirs
    return out


def nest(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"model/rk_mean": x}`` -> ``{"model": {"rk_mean": x}}`` (keys with one ``/`` only)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        field, sep, metric = key.partition("/")
        if sep and "/" not in metric:
            out.setdefault(field, {})[metric] = value
    return out


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """The columns of a report CSV table (``pk.csv``, ``rk.csv``, ...) by header name, as float
    arrays."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty, expected a header row and data rows")
    header, body = rows[0], rows[1:]
    try:
        values = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    except ValueError as err:
        raise ValueError(f"{path}: expected {len(header)} numbers per row ({err})") from err
    return {name: values[:, i] for i, name in enumerate(header)}
