"""Scores over several realisations: mean +- std per field and metric, network minus HOD in sigma.

Each realisation is one whole periodic box (a further mock universe, or any field store) scored
like the held-out report. A deterministic field (``model``, ``oracle_mean``) has one score per
realisation; a random one (each HOD, ``model_draw``) has several draws, whose mean is its score
on that realisation (their spread is kept as ``draw_std``).

``realisations.json``: ``{field: {metric: {"mean", "std", "values"}}}`` with ``values`` one
per realisation (in order), ``std`` their sample standard deviation (``ddof=1``; ``null`` for a
single realisation) and, for fields drawn several times, ``draws`` (per realisation, the
draws' scores) and ``draw_std`` (the mean over realisations of the draws' standard deviation).

A network is compared with a benchmark of its kind (a mean with a mean, a draw with a draw) on
the same universes: per realisation the difference
of their scores (``|x|`` for signed errors such as the total mass error), then its mean, its
standard error (std / sqrt(n)) and the significance mean / error, signed so that a positive
number of sigma means the network is better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dm2gal.eval.measurements import spread
from dm2gal.stats.field_kinds import same_kind

#: metrics where a higher value is better (every other one is an error: lower is better)
HIGHER_IS_BETTER = ("rk_mean", "rk_min")
#: signed errors, compared by their magnitude
SIGNED = ("total_mass_rel_err",)
#: settings that the report carries beside the metrics
NOT_METRICS = ("k_max",)

Scores = Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]]


def higher_is_better(metric: str) -> bool:
    """True for r(k) scores (band ones included: ``rk_mean_large``); errors are lower-better."""
    return metric.startswith(HIGHER_IS_BETTER)


def comparable(metric: str, value: float) -> float:
    """The value a comparison uses: ``|value|`` for a signed error, else the value."""
    return abs(value) if metric in SIGNED else value


def summarise(per_realisation: Sequence[Scores]) -> dict[str, dict[str, dict]]:
    """The ``realisations.json`` structure from per-realisation scores.

    ``per_realisation[i][field]`` is the list of score dicts of that field's draws on
    realisation ``i`` (one for a deterministic field). A field's metrics are those of its first
    draw; a field missing from a realisation is summarised over the others.
    """
    if not per_realisation:
        raise ValueError("no realisation to summarise")
    names = list(dict.fromkeys(name for scores in per_realisation for name in scores))
    out: dict[str, dict[str, dict]] = {}
    for name in names:
        runs = [scores[name] for scores in per_realisation if name in scores]
        if any(not draws for draws in runs):
            raise ValueError(f"field '{name}' has a realisation without any draw")
        metrics = [m for m in runs[0][0] if m not in NOT_METRICS]
        out[name] = {}
        for metric in metrics:
            draws = [[float(d[metric]) for d in run] for run in runs]
            values = [float(np.mean(d)) for d in draws]
            entry = {"mean": float(np.mean(values)), "std": spread(values), "values": values}
            if max(len(d) for d in draws) > 1:
                entry["draws"] = draws
                entry["draw_std"] = float(np.mean([spread(d) or 0.0 for d in draws]))
            out[name][metric] = entry
    return out


@dataclass(frozen=True)
class Comparison:
    """``network`` minus ``reference`` on ``metric`` over ``n`` paired realisations.

    ``diff``: mean difference of the compared values; ``error``: its standard error (None for
    one realisation); ``sigma``: diff / error signed so that > 0 means the network is better
    (None without an error; +-inf when every realisation differs by exactly the same amount).
    """

    network: str
    reference: str
    metric: str
    n: int
    diff: float
    error: float | None
    sigma: float | None


def compare(
    summary: Mapping[str, Mapping[str, Mapping]], networks: Sequence[str], references: Sequence[str]
) -> list[Comparison]:
    """Every ``network`` against every ``reference`` of its kind (means with means, draws with
    draws: :mod:`dm2gal.stats.field_kinds`) on each metric both have, realisation by realisation
    (fields absent from ``summary`` are skipped)."""
    rows = []
    for net in (n for n in networks if n in summary):
        for ref in (r for r in references if r in summary and same_kind(net, r)):
            for metric in (m for m in summary[net] if m in summary[ref]):
                a = [comparable(metric, v) for v in summary[net][metric]["values"]]
                b = [comparable(metric, v) for v in summary[ref][metric]["values"]]
                if len(a) != len(b):
                    raise ValueError(
                        f"{net} and {ref} were scored on different realisations ({metric}): "
                        f"{len(a)} vs {len(b)}"
                    )
                d = np.subtract(a, b)
                diff, error, sigma = float(d.mean()), None, None
                if len(d) > 1:
                    error = spread(d) / np.sqrt(len(d))
                    better = diff if higher_is_better(metric) else -diff
                    sigma = better / error if error > 0 else float(np.sign(better) * np.inf)
                rows.append(Comparison(net, ref, metric, len(d), diff, error, sigma))
    return rows


def _pm(entry: Mapping) -> str:
    std = entry["std"]
    return f"{entry['mean']:.4g}" + ("" if std is None else f" ± {std:.2g}")


def markdown(
    summary: Mapping[str, Mapping[str, Mapping]],
    comparisons: Sequence[Comparison],
    sources: Sequence[str],
    metrics: Sequence[str] | None = None,
) -> str:
    """``realisations.md``: the realisations used, a field x metric table (mean ± std) and the
    network-minus-benchmark table with significances."""
    fields = list(summary)
    if metrics is None:
        metrics = list(dict.fromkeys(m for f in fields for m in summary[f]))
    lines = [f"# Scores over {len(sources)} realisation(s)", ""]
    lines += [f"- {s}" for s in sources]
    lines += [
        "",
        "Mean ± std over realisations (a random field, `*_draw`: each realisation's mean over "
        "its draws).",
        "",
    ]
    lines += ["| metric | " + " | ".join(fields) + " |", "|---" * (len(fields) + 1) + "|"]
    for metric in metrics:
        cells = [_pm(summary[f][metric]) if metric in summary[f] else "" for f in fields]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    if comparisons:
        lines += [
            "",
            "Network minus benchmark, paired per realisation (|total mass error| compared); "
            "sigma > 0: the network is better.",
            "",
            "| network | benchmark | metric | difference | sigma | better |",
            "|---|---|---|---|---|---|",
        ]
        for c in comparisons:
            err = "" if c.error is None else f" ± {c.error:.2g}"
            sig = "n/a" if c.sigma is None else f"{c.sigma:+.1f}"
            if c.sigma is None or abs(c.sigma) < 2:
                who = "neither (< 2σ)" if c.sigma is not None else "n/a"
            else:
                who = c.network if c.sigma > 0 else c.reference
            lines.append(
                f"| {c.network} | {c.reference} | {c.metric} | {c.diff:+.4g}{err} | {sig} | {who} |"
            )
    return "\n".join(lines) + "\n"
