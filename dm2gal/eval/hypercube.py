"""A network conditioned on universe parameters, scored on unseen points of its hypercube.

Per test universe (a point of the source's parameter space never trained on,
``source.test_universes()``), the held-out evaluation of :mod:`dm2gal.eval.evaluation` on that
universe's test region: the network bound to the universe's recorded parameters
(:mod:`dm2gal.infer.parameters`), an HOD fitted on *that* universe's own training region, and
the oracle. The scores of each universe go to ``universes.json``; ``summary`` holds the goals
(the network beats the HOD on r(k <= 1) with its mean and on |P/P_true - 1| (k <= 1) with its
draws, like with like) as counts and each score's mean +- std over the universes. With the
source's response pairs, the response of P(k) to each parameter (:mod:`dm2gal.eval.response`).
Written: ``hypercube.json``, ``hypercube.md``, ``scores_by_parameter.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import DictConfig

from dm2gal.data.splits import Splits
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.eval.evaluation import (
    EvaluationSettings,
    evaluate_test_region,
    predict_network,
    region_field,
)
from dm2gal.eval.plots import save_png
from dm2gal.eval.realisations import whole_box
from dm2gal.eval.references import fit_hods
from dm2gal.eval.response import (
    Predict,
    pair_response,
    response_goal,
    responses_markdown,
    summarise_responses,
)
from dm2gal.infer.parameters import bind_parameters
from dm2gal.io.parameters import read_parameters
from dm2gal.io.store import FieldStore, atomic_write_text, staged_dir
from dm2gal.models.base import FieldNet

log = logging.getLogger(__name__)

#: the scores that the goals and the tables follow: r(k) and the P(k) error at k <= 1 h/Mpc,
#: and the decorrelation ratio over the oracle's there
LARGE_RK, LARGE_PK = "rk_mean_large", "pk_ratio_abs_err_large"
LARGE_DECORRELATION = "decorrelation_ratio_large"
SCORES = (LARGE_RK, LARGE_PK, LARGE_DECORRELATION)
RESULT_FILE, TABLE_FILE, PLOT_FILE = "hypercube.json", "hypercube.md", "scores_by_parameter.png"


@dataclass(frozen=True)
class UniverseData:
    """One universe as the held-out evaluation and the HOD fit read a data module: its store,
    the run's splits (the same held-out regions in every universe), normalisation and fields."""

    store: FieldStore
    splits: Splits
    transform: FieldTransform
    inputs: Sequence[str]
    target: str
    training_boxes: Sequence[FieldStore] = ()

    @property
    def box(self) -> float:
        return self.store.box


def universe_data(datamodule: Any, store: FieldStore) -> UniverseData:
    """``store``'s universe seen through the run's ``datamodule`` (set up)."""
    return UniverseData(
        store, datamodule.splits, datamodule.transform, list(datamodule.inputs), datamodule.target
    )


def network_names(net: FieldNet) -> tuple[str, str]:
    """The evaluation's names of the network's mean field and of its random field (a
    deterministic network: its one field for both)."""
    return ("model_mean", "model_draw") if hasattr(net, "infer_draws") else ("model", "model")


def universe_row(
    parameters: Mapping[str, float], metrics: Mapping[str, float], net: FieldNet, hod: str
) -> dict[str, Any]:
    """One universe's line: its parameters and the compared scores (like with like: means for
    r(k), random fields for the P(k) error; a deterministic network's one field against the
    HOD's mean for both), and whether the network beats the HOD on each."""
    mean, draw = network_names(net)
    random = mean != draw  # a deterministic network's one field meets the HOD's mean
    fields = {
        "network_mean": mean,
        "network_draw": draw,
        "hod_mean": f"hod_{hod}_mean",
        "hod_draw": f"hod_{hod}_draw" if random else f"hod_{hod}_mean",
        "oracle_mean": "oracle_mean",
        "oracle_draw": "oracle_draw",
    }
    scores = {
        label: {s: metrics[f"{field}/{s}"] for s in SCORES if f"{field}/{s}" in metrics}
        for label, field in fields.items()
    }
    return {
        "parameters": dict(parameters),
        "scores": scores,
        "beats_hod_rk": scores["network_mean"][LARGE_RK] > scores["hod_mean"][LARGE_RK],
        "beats_hod_pk": scores["network_draw"][LARGE_PK] < scores["hod_draw"][LARGE_PK],
    }


def evaluate_universe(
    net: FieldNet,
    data: UniverseData,
    hod_cfg: DictConfig,
    out_dir: Path,
    settings: EvaluationSettings,
    seed: int,
) -> dict[str, float]:
    """The held-out evaluation of one universe (into ``out_dir``): ``net`` bound to the
    universe's recorded parameters, the HOD of ``hod_cfg`` fitted on the universe's own
    training region, the oracle; return the metrics."""
    fitted = fit_hods([hod_cfg], data)
    bound = bind_parameters(net, data.store, None)
    return evaluate_test_region(bound, data, out_dir, settings, hods=fitted, seed=seed)


def evaluate_universes(
    net: FieldNet,
    datamodule: Any,
    stores: Sequence[FieldStore],
    hod_cfg: DictConfig,
    out_dir: Path,
    settings: EvaluationSettings,
    seed: int,
) -> list[dict[str, Any]]:
    """:func:`universe_row` of every store (``out_dir/universe_<i>``: its evaluation); a
    universe whose test region holds no stellar mass (no P(k) to score: a small box) is left
    out with a warning."""
    settings = dataclasses.replace(settings, calibration_voxels=0, realisations=0, stores=())
    hod = str(hod_cfg.get("name", "hod"))
    rows = []
    for i, store in enumerate(stores):
        data = universe_data(datamodule, store)
        if not region_field(store.read(data.target), data.splits.test).any():
            log.warning("%s: no stellar mass in the test region; universe left out", store.root)
            continue
        metrics = evaluate_universe(net, data, hod_cfg, out_dir / f"universe_{i}", settings, seed)
        row = universe_row(read_parameters(store), metrics, net, hod)
        rows.append(row | {"store": str(store.root)})
    if not rows:
        raise ConfigError(
            f"data.source.test_points: none of the {len(stores)} test universes has stellar "
            "mass in the test region (data.splits.test); nothing to score"
        )
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The goals over the universes (how many the network beats the HOD in, on r(k <= 1) and
    on the P(k) error (k <= 1), and on both) and every compared score's mean +- std (ddof 1)."""
    both = [row["beats_hod_rk"] and row["beats_hod_pk"] for row in rows]
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for label in rows[0]["scores"]:
        for score in rows[0]["scores"][label]:
            values = np.array([row["scores"][label][score] for row in rows])
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            scores.setdefault(label, {})[score] = {"mean": float(values.mean()), "std": std}
    return {
        "universes": len(rows),
        "beats_hod_rk": sum(row["beats_hod_rk"] for row in rows),
        "beats_hod_pk": sum(row["beats_hod_pk"] for row in rows),
        "beats_hod_both": sum(both),
        "fraction_beats_hod_both": sum(both) / len(rows),
        "scores": scores,
    }


def universes_markdown(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """A Markdown table: one line per universe (parameters, r(k <= 1) of the network's and the
    HOD's means, P err (k <= 1) of their random fields, won or not), then mean +- std."""
    names = list(rows[0]["parameters"])
    head = [*names, "r net", "r HOD", "r oracle", "P err net", "P err HOD", "beats HOD"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s = row["scores"]
        cells = [f"{row['parameters'][n]:.4g}" for n in names] + [
            f"{s['network_mean'][LARGE_RK]:.3f}",
            f"{s['hod_mean'][LARGE_RK]:.3f}",
            f"{s['oracle_mean'].get(LARGE_RK, float('nan')):.3f}",
            f"{s['network_draw'][LARGE_PK]:.3f}",
            f"{s['hod_draw'][LARGE_PK]:.3f}",
            "yes" if row["beats_hod_rk"] and row["beats_hod_pk"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    m = summary["scores"]

    def pm(label: str, score: str) -> str:
        entry = m[label].get(score)
        return "n/a" if entry is None else f"{entry['mean']:.3f} ± {entry['std']:.3f}"

    cells = (
        ["mean ± std"]
        + [""] * (len(names) - 1)
        + [
            pm("network_mean", LARGE_RK),
            pm("hod_mean", LARGE_RK),
            pm("oracle_mean", LARGE_RK),
            pm("network_draw", LARGE_PK),
            pm("hod_draw", LARGE_PK),
            f"{summary['beats_hod_both']}/{summary['universes']}",
        ]
    )
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def score_by_parameter(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """``path`` (PNG): r(k <= 1) of the means and P err (k <= 1) of the random fields of the
    network, the HOD and the oracle against each parameter, one column per parameter."""
    names = list(rows[0]["parameters"])
    fig = Figure(figsize=(3 * len(names), 5.5))
    axes = fig.subplots(2, len(names), squeeze=False, sharey="row")
    series = (("network", "C0"), ("hod", "C1"), ("oracle", "k"))
    for col, name in enumerate(names):
        x = np.array([row["parameters"][name] for row in rows])
        for r, (score, kind) in enumerate(((LARGE_RK, "mean"), (LARGE_PK, "draw"))):
            ax = axes[r, col]
            for label, color in series:
                y = [row["scores"][f"{label}_{kind}"].get(score, np.nan) for row in rows]
                ax.plot(x, y, "o", color=color, label=f"{label} {kind}")
            ax.set_xlabel(name)
    axes[0, 0].set_ylabel("r(k <= 1)")
    axes[1, 0].set_ylabel("|P/P_true - 1| (k <= 1)")
    axes[0, 0].legend(fontsize=7)
    save_png(fig, path)


def network_predict(net: FieldNet, data: Any, settings: EvaluationSettings, seed: int) -> Predict:
    """``predict(store)``: ``[mean, *draws]`` of ``net`` bound to ``store``'s parameters on its
    whole box (``settings.draws`` draws of a probabilistic network; its one field otherwise)."""
    options = settings.predict_options(progress=False)

    def predict(store: FieldStore) -> list[np.ndarray]:
        bound = bind_parameters(net, store, None)
        inputs = [store.read(name) for name in data.inputs]
        region = whole_box(store)
        out = predict_network(bound, data.transform, inputs, region, options, settings.draws, seed)
        return list(out) if isinstance(out, list) else [out]

    return predict


def hypercube_response(
    net: FieldNet, datamodule: Any, source: Any, settings: EvaluationSettings, seed: int
) -> dict[str, dict[str, Any]]:
    """For each parameter of ``source.response`` (deltas, IC seeds): d ln P / d theta per
    field and band of every seed's universe pair, their summary and the goal."""
    predict = network_predict(net, datamodule, settings, seed)
    per_seed: dict[str, list] = {}
    for ic_seed in source.response["seeds"]:
        for name, universes in source.response_universes(ic_seed).items():
            pair = tuple(source.build_all(list(universes)))
            response = pair_response(
                pair, name, datamodule.target, predict, settings.report, read_parameters
            )
            per_seed.setdefault(name, []).append(response)
    out = {}
    for name, responses in per_seed.items():
        summary = summarise_responses(responses)
        out[name] = {"summary": summary, "goal": response_goal(summary)}
    return out


def evaluate_hypercube(
    net: FieldNet,
    datamodule: Any,
    source: Any,
    hod_cfg: DictConfig,
    out_dir: Path,
    settings: EvaluationSettings,
    seed: int,
    response: bool = True,
) -> dict[str, Any]:
    """Score ``net`` (its run's ``datamodule``, set up) on the test universes of ``source``
    (a hypercube: ``test_universes()``, ``response_universes(seed)``, ``build_all``) and, with
    ``response``, its P(k) response; write ``hypercube.json``, ``hypercube.md``,
    ``scores_by_parameter.png`` and each universe's evaluation into ``out_dir`` (whole, or not
    at all); return the ``hypercube.json`` content."""
    stores = source.build_all(source.test_universes())
    with staged_dir(out_dir) as staging:
        rows = evaluate_universes(net, datamodule, stores, hod_cfg, staging, settings, seed)
        result = {"universes": rows, "summary": summarise(rows)}
        text = "## Unseen universes\n\n" + universes_markdown(rows, result["summary"])
        if response:
            result["response"] = hypercube_response(net, datamodule, source, settings, seed)
            text += "\n## Response d ln P / d theta\n\n" + responses_markdown(result["response"])
        atomic_write_text(staging / RESULT_FILE, json.dumps(result, indent=2))
        atomic_write_text(staging / TABLE_FILE, text)
        score_by_parameter(rows, staging / PLOT_FILE)
    return result
