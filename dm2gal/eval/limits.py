"""The network's fields against the physical limit, pooled over runs and their unseen boxes.

One realisation evaluation (``realisations.json``) scores a run on a few boxes; a goal such as
"the draws' P err no worse than the oracle draw's + 0.02" then rests on 3-5 numbers whose
box-to-box scatter is often larger than the margin. :func:`pool` gathers every box of several
runs (e.g. seeds of one configuration), and for each goal of :data:`GOALS` gives the excess of
the network's score over its limit per box, the mean excess with its standard error, and a
verdict: ``met`` (mean excess + 2 s.e. <= 0), ``missed`` (mean excess - 2 s.e. > 0) or
``within noise``. The goals are issue 12's: the draws against ``oracle_draw`` in the bands up
to k_N / 2, the draws' voxel PDF and total mass, and the mean's decorrelation against the
oracle mean's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dm2gal.errors import ConfigError, MissingFileError
from dm2gal.eval.realisations import JSON_FILE


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
    pooled, skipped = [], []
    for goal in goals:
        values = _values(scores, goal.field, goal.metric)
        reference = _values(scores, goal.reference, goal.metric) if goal.reference else 0.0
        if values is None or reference is None:
            skipped.append(goal)
            continue
        scored = np.abs(values) if goal.absolute else values
        limit = reference + goal.margin
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
