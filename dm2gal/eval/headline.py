"""Headline scores of an evaluation: which scores compare runs, the network-minus-HOD margins,
and the report's curve tables read back from CSV.

Fields are named as in the report: ``truth``, the network's (``model``, ``model_calibrated``;
a probabilistic network's ``model_mean`` and ``model_draw``), and the references
(``hod_<name>``, ``oracle_<name>``). A score is headline when its name is one of
:data:`HEADLINE` or one of them with a k-band suffix (``rk_mean_large``); everything else
(``k_max``, ``log_rmse``, ...) stays in the full tables.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

#: the fidelity scores that compare runs, in column order (per band where the report has bands)
HEADLINE = (
    "pk_ratio_abs_err",
    "rk_mean",
    "decorrelation_ratio",
    "bk_ratio_abs_err",
    "total_mass_rel_err",
)
REFERENCE_PREFIXES = ("hod_", "oracle_")
#: the HOD the margins are measured against when the evaluation has it (else the first HOD)
MARGIN_REFERENCE = "hod_binned"
#: the network field quoted as a run's result, the first of these the evaluation has: a
#: probabilistic network's mean (its conditional expectation, the best r(k) it can give), else
#: the calibrated regression (a raw log-mass regression compresses the bright end and misses
#: the total mass), else the raw one
HEADLINE_FIELDS = ("model_mean", "model_calibrated", "model")
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


def headline_field(fields: Iterable[str]) -> str | None:
    """The first of :data:`HEADLINE_FIELDS` among ``fields``, else None."""
    fields = set(fields)
    return next((name for name in HEADLINE_FIELDS if name in fields), None)


def margin_reference(fields: Iterable[str]) -> str | None:
    """:data:`MARGIN_REFERENCE` when among ``fields``, else the first HOD field, else None."""
    hods = [f for f in fields if f.startswith("hod_")]
    return MARGIN_REFERENCE if MARGIN_REFERENCE in hods else (hods[0] if hods else None)


def margins(
    scores: Mapping[str, Mapping[str, float]], model: str | None = None
) -> dict[str, float]:
    """``{metric: scores[model][metric] - scores[hod][metric]}`` against
    :func:`margin_reference` for every finite score both have (negative: the network's error
    is smaller; for ``rk_mean*``, positive: the network correlates better); ``model`` defaults
    to the :func:`headline_field`. Empty without an HOD or without ``model``."""
    reference = margin_reference(scores)
    model = model or headline_field(scores)
    if reference is None or model not in scores:
        return {}
    ours, theirs = scores[model], scores[reference]
    return {
        metric: float(ours[metric]) - float(theirs[metric])
        for metric in ours
        if metric in theirs
        and metric not in NOT_SCORES
        and math.isfinite(float(ours[metric]))
        and math.isfinite(float(theirs[metric]))
    }


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
