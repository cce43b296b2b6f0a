"""The network's fields against the physical limit, pooled over runs and their unseen boxes.

One realisation evaluation (``realisations.json``) scores a run on a few boxes; a goal such as
"the draws' P err no worse than the oracle draw's + 0.02" then rests on 3-5 numbers whose
box-to-box scatter is often larger than the margin. :func:`pool` gathers every box of several
runs (e.g. seeds of one configuration), and for each goal of :data:`GOALS` gives the excess of
the network's score over its limit per box, the mean excess with its standard error, and a
verdict: ``met`` (mean excess + 2 s.e. <= 0), ``missed`` (mean excess - 2 s.e. > 0) or
``within noise``. The goals: the draws against ``oracle_draw`` in the bands up to k_N / 2, the
draws' voxel PDF and total mass, and the mean's decorrelation against the oracle mean's.

:func:`claims` makes the comparison a claim rests on: per statistic, the network's mean against
the strongest HOD mean and its draws against the strongest HOD draws (the best pooled score of
each kind, never across kinds), paired box by box, with the margin in standard errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dm2gal.errors import ConfigError, MissingFileError
from dm2gal.eval.aggregate import comparable, higher_is_better
from dm2gal.eval.headline import strongest_benchmark
from dm2gal.eval.realisations import BOXES_FILE, JSON_FILE
from dm2gal.eval.report import ORACLE_REFERENCES
from dm2gal.stats.field_kinds import HEADLINE_FIELDS


@dataclass(frozen=True)
class Goal:
    """``field``'s ``metric`` on every box at most ``reference``'s + ``margin`` (``reference``
    None: at most ``margin``); ``absolute``: the metric's magnitude is compared."""

    label: str
    field: str
    metric: str
    margin: float
    reference: str | None = None
    absolute: bool = False


BANDS_TO_HALF_NYQUIST = ("large", "intermediate", "small")
GOALS = (
    *(
        Goal(f"draws' P err, {b} band", "model_draw", f"pk_ratio_abs_err_{b}", 0.02, "oracle_draw")
        for b in BANDS_TO_HALF_NYQUIST
    ),
    Goal("draws' B err", "model_draw", "bk_ratio_abs_err", 0.02, "oracle_draw"),
    Goal("draws' PDF, worst decade from 1e8 Msun/h", "model_draw", "pdf_decade_abs_err", 0.10),
    Goal("draws' total M*, abs. rel. err", "model_draw", "total_mass_rel_err", 0.02, absolute=True),
    *(
        Goal(f"mean's decorrelation / oracle mean's, {b} band", "model_mean",
             f"decorrelation_ratio_{b}", 1.2)
        for b in ("large", "intermediate")
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Pooled:
    """One goal over ``n`` boxes: the network's mean score, the limit's mean, the mean excess of
    score over limit and its standard error, the boxes meeting the goal and the verdict."""

    goal: Goal
    n: int
    value: float
    limit: float
    excess: float
    stderr: float
    boxes_met: int

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "met" if self.excess <= 0 else "missed"
        if self.excess + 2.0 * self.stderr <= 0:
            return "met"
        if self.excess - 2.0 * self.stderr > 0:
            return "missed"
        return "within noise"


def read_realisations(run: Path) -> dict:
    """A run's realisation scores, ``{field: {metric: {"values": [one per box], ...}}}``."""
    path = Path(run) / "evaluation" / JSON_FILE
    if not path.is_file():
        raise MissingFileError(
            f"{path}: not found; score the run on unseen boxes first "
            "(python evaluate.py run_dir=<run> evaluation.realisations=N)"
        )
    return json.loads(path.read_text())


def box_ids(run: Path, scores: dict) -> list[str]:
    """The boxes a run was scored on, in the order of its values: the stores it names in
    ``realisations_boxes.json`` (runs scored on the same universes share them), else one new
    box per value."""
    count = len(next(iter(next(iter(scores.values())).values()))["values"])
    path = Path(run) / "evaluation" / BOXES_FILE
    if path.is_file():
        boxes = json.loads(path.read_text())
        if len(boxes) == count:
            return [str(Path(box).resolve()) for box in boxes]
    return [f"{Path(run).resolve()}#{i}" for i in range(count)]


def per_box(values: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """``values`` (one per run and box) averaged over the runs of each box: several seeds of a
    network on one universe are one sample of that universe, not several."""
    _, first, index = np.unique(np.asarray(ids), return_index=True, return_inverse=True)
    means = np.bincount(index, weights=values) / np.bincount(index)
    return means[np.argsort(first)]  # boxes in order of first appearance


def _values(scores: Sequence[dict], field: str, metric: str) -> np.ndarray | None:
    try:
        return np.concatenate([np.asarray(s[field][metric]["values"], float) for s in scores])
    except KeyError:
        return None


def pool(runs: Sequence[Path], goals: Sequence[Goal] = GOALS) -> tuple[list[Pooled], list[Goal]]:
    """Each goal pooled over every box of ``runs``; returns the pooled goals and those the runs
    cannot score (a field or metric missing, e.g. no draws from a deterministic network)."""
    if not runs:
        raise ConfigError("runs: expected at least one run directory")
    scores = [read_realisations(run) for run in runs]
    ids = [box for run, s in zip(runs, scores, strict=True) for box in box_ids(run, s)]
    pooled, skipped = [], []
    for goal in goals:
        values = _values(scores, goal.field, goal.metric)
        reference = _values(scores, goal.reference, goal.metric) if goal.reference else 0.0
        if values is None or reference is None:
            skipped.append(goal)
            continue
        scored = per_box(np.abs(values) if goal.absolute else values, ids)
        limit = per_box(np.broadcast_to(reference + goal.margin, values.shape), ids)
        excess = scored - limit
        n = len(excess)
        stderr = float(np.std(excess, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        pooled.append(
            Pooled(
                goal, n, float(scored.mean()), float(np.mean(limit)), float(excess.mean()),
                stderr, int(np.sum(excess <= 0)),
            )
        )  # fmt: skip
    return pooled, skipped


def markdown(pooled: Sequence[Pooled], skipped: Sequence[Goal], runs: Sequence[Path]) -> str:
    """The pooled goals as a Markdown table (values mean over boxes; excess mean ± s.e.)."""
    lines = [
        f"# Goals over {pooled[0].n if pooled else 0} boxes of {len(runs)} run(s)",
        "",
        *(f"- {run}" for run in runs),
        "",
        "| goal | field | score | limit | excess over the limit | verdict | boxes meeting it |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for p in pooled:
        lines.append(
            f"| {p.goal.label} | {p.goal.field} | {p.value:.4g} | {p.limit:.4g} | "
            f"{p.excess:+.4g} ± {p.stderr:.2g} | {p.verdict} | {p.boxes_met}/{p.n} |"
        )
    if skipped:
        missing = ", ".join(g.label for g in skipped)
        lines += ["", f"Not scored (field or metric missing): {missing}"]
    return "\n".join(lines) + "\n"


#: the statistics a claim is made on per kind, per k band where the report has bands: a mean
#: field is judged on its correlation with the truth and its total (its own P, B and PDF lack
#: the scatter by construction), a draw on every statistic of the field
CLAIM_METRICS = {
    "mean": (*(f"rk_mean_{b}" for b in BANDS_TO_HALF_NYQUIST), "total_mass_rel_err"),
    "draw": (
        *(f"pk_ratio_abs_err_{b}" for b in BANDS_TO_HALF_NYQUIST),
        *(f"rk_mean_{b}" for b in BANDS_TO_HALF_NYQUIST),
        "bk_ratio_abs_err",
        "pdf_decade_abs_err",
        "total_mass_rel_err",
    ),
}
#: the network field of each kind that a claim is made for (first present)
CLAIM_NETWORKS = {"mean": HEADLINE_FIELDS, "draw": ("model_draw",)}
#: a margin counts when it exceeds this many standard errors
CLAIM_SIGMA = 2.0


@dataclass(frozen=True)
class Claim:
    """The network's ``metric`` against the strongest benchmark of its kind over ``n`` paired
    boxes: pooled means, the oracle's (None without one), the mean paired difference of the
    compared values (:func:`dm2gal.eval.aggregate.comparable`) with its standard error, and
    ``sigma`` signed so that > 0 means the network is better."""

    kind: str
    network: str
    metric: str
    benchmark: str
    n: int
    value: float
    benchmark_value: float
    oracle: float | None
    diff: float
    stderr: float
    sigma: float

    @property
    def verdict(self) -> str:
        if self.sigma >= CLAIM_SIGMA:
            return "network better"
        if self.sigma <= -CLAIM_SIGMA:
            return f"{self.benchmark} better"
        return f"tie (|σ| < {CLAIM_SIGMA:g})"


def claims(
    runs: Sequence[Path], metrics: Mapping[str, Sequence[str]] = CLAIM_METRICS
) -> list[Claim]:
    """For each kind (mean, draw) and each of its ``metrics``, the network against the HOD of
    its kind whose pooled score over every box of ``runs`` is best, paired box by box."""
    if not runs:
        raise ConfigError("runs: expected at least one run directory")
    scores = [read_realisations(run) for run in runs]
    ids = [box for run, s in zip(runs, scores, strict=True) for box in box_ids(run, s)]
    fields = set.intersection(*(set(s) for s in scores))
    out = []
    for field_kind, names in CLAIM_NETWORKS.items():
        network = next((n for n in names if n in fields), None)
        if network is None:
            continue
        for metric in metrics.get(field_kind, ()):
            ours = _values(scores, network, metric)
            if ours is None:
                continue
            pooled = {
                f: {metric: _comparable_mean(values, metric)}
                for f in sorted(fields)
                if (values := _values(scores, f, metric)) is not None
            }
            best = strongest_benchmark(pooled, network, metric)
            if best is None:
                continue
            theirs = _values(scores, best, metric)
            a = per_box(np.array([comparable(metric, v) for v in ours]), ids)
            b = per_box(np.array([comparable(metric, v) for v in theirs]), ids)
            d = a - b
            n = len(d)
            stderr = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            better = float(d.mean()) * (1.0 if higher_is_better(metric) else -1.0)
            sigma = better / stderr if stderr > 0 else math.copysign(math.inf, better)
            oracle = _values(scores, ORACLE_REFERENCES[field_kind], metric)
            out.append(
                Claim(
                    field_kind, network, metric, best, n, float(a.mean()), float(b.mean()),
                    None if oracle is None else float(np.mean(per_box(
                        np.array([comparable(metric, v) for v in oracle]), ids
                    ))),
                    float(d.mean()), stderr, sigma,
                )
            )  # fmt: skip
    return out


def _comparable_mean(values: np.ndarray, metric: str) -> float:
    return float(np.mean([comparable(metric, v) for v in values]))


def claims_markdown(rows: Sequence[Claim]) -> str:
    """The claim table: per kind and statistic, the network, the strongest benchmark of its
    kind and the oracle (pooled means; |x| for signed errors), the paired difference ± s.e.,
    sigma and the verdict."""
    lines = [
        "# The claim: the network against the strongest benchmark of its kind",
        "",
        "Means against means, draws against draws; pooled over every box of every run; "
        f"σ > 0: the network is better; a margin counts beyond {CLAIM_SIGMA:g}σ.",
        "",
        "| kind | statistic | network | strongest benchmark | network | benchmark | oracle "
        "| difference ± s.e. | σ | verdict |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in rows:
        oracle = "" if c.oracle is None else f"{c.oracle:.4g}"
        lines.append(
            f"| {c.kind} | {c.metric} | {c.network} | {c.benchmark} | {c.value:.4g} | "
            f"{c.benchmark_value:.4g} | {oracle} | {c.diff:+.3g} ± {c.stderr:.2g} | "
            f"{c.sigma:+.1f} | {c.verdict} |"
        )
    return "\n".join(lines) + "\n"
