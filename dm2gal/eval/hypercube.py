"""A network conditioned on universe parameters, scored on unseen points of its hypercube.

Per test universe (a point of the source's parameter space never trained on,
``source.test_universes()``), its whole box (every voxel unseen by the network: k down to the
box's fundamental mode): the network bound to the universe's recorded parameters
(:mod:`dm2gal.infer.parameters`), an HOD fitted on *that* universe (cross-fitted: each x-half of
the box painted by the HOD fitted on the other half, so that every voxel is out of its HOD's
sample, :func:`cross_fitted_hod`), and the oracle, against the truth. The same on the universes
at the centre of the ranges (one per response seed), where a network trained on the centre
universe alone (``data.source.training=centre``) is the single-universe baseline. The scores of
each universe go to ``hypercube.json``; ``summary`` holds the goals (the network beats the HOD on
r(k <= 1) with its mean and on |P/P_true - 1| (k <= 1) with its draws, like with like) as counts
and each score's mean +- std over the universes. With the source's response pairs, the response
of P(k) to each parameter (:mod:`dm2gal.eval.response`). Written: ``hypercube.json``,
``hypercube.md``, ``scores_by_parameter.png`` and each universe's report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig

from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.eval.evaluation import (
    EvaluationSettings,
    RegionFields,
    predict_network,
    score_test_fields,
    split_draws,
)
from dm2gal.eval.plots import save_png
from dm2gal.eval.realisations import network_fields, whole_box
from dm2gal.eval.references import oracle_fields
from dm2gal.eval.response import (
    Predict,
    pair_response,
    response_goal,
    responses_markdown,
    summarise_responses,
)
from dm2gal.hod import fit_on_stores, paint_on_store
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
class RunFields:
    """What a run's network reads and predicts: its input fields' names, normalisation and
    target field."""

    transform: FieldTransform
    inputs: Sequence[str]
    target: str


def run_fields(datamodule: Any) -> RunFields:
    """The fields of the run's ``datamodule`` (set up)."""
    return RunFields(datamodule.transform, list(datamodule.inputs), datamodule.target)


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


def whole_box_prediction(
    net: FieldNet, fields: RunFields, store: FieldStore, settings: EvaluationSettings, seed: int
) -> np.ndarray | list[np.ndarray]:
    """``net`` bound to ``store``'s parameters on its whole box: a deterministic network's
    field, a probabilistic one's ``[mean, *draws]`` (``settings.draws`` draws, seeds from
    ``seed``); Msun/h per voxel."""
    bound = bind_parameters(net, store, None)
    inputs = [store.read(name) for name in fields.inputs]
    options = settings.predict_options(progress=False)
    return predict_network(
        bound, fields.transform, inputs, whole_box(store), options, settings.draws, seed
    )


def cross_fitted_hod(hod_cfg: DictConfig, store: FieldStore, seed: int) -> dict[str, np.ndarray]:
    """The HOD of ``hod_cfg`` on ``store``'s whole box, fitted on the universe itself but every
    voxel out of sample: the x < box/2 half painted by the HOD fitted on the other half's
    galaxies and the other way round (two-fold cross-fitting). Its mean ``hod_<name>_mean`` and
    one draw ``hod_<name>_draw`` (seed ``seed``), Msun/h per voxel; none without catalogues."""
    half = store.box / 2
    centres = (np.arange(store.grid) + 0.5) * store.box / store.grid
    out: dict[str, np.ndarray] = {}
    for fit_on_low in (True, False):

        def is_heldout(pos: np.ndarray, fit_on_low: bool = fit_on_low) -> np.ndarray:
            return (pos[:, 0] < half) != fit_on_low

        painted = (centres >= half) if fit_on_low else (centres < half)
        fitted = fit_on_stores([instantiate(hod_cfg)], [store], is_heldout)
        for name, (field,) in paint_on_store(fitted, store, [seed]).items():
            out.setdefault(name, np.zeros_like(field))[painted] = field[painted]
    return out


def evaluate_universe(
    net: FieldNet,
    fields: RunFields,
    store: FieldStore,
    hod_cfg: DictConfig,
    out_dir: Path,
    settings: EvaluationSettings,
    seed: int,
) -> dict[str, float]:
    """One unseen universe's whole box against its truth (report into ``out_dir``): ``net``
    bound to the universe's recorded parameters, the :func:`cross_fitted_hod` of ``hod_cfg``
    and the oracle; return the metrics."""
    prediction = whole_box_prediction(net, fields, store, settings, seed)
    scored, draws = split_draws(network_fields(prediction))
    scored |= cross_fitted_hod(hod_cfg, store, seed) | oracle_fields(store)
    truth = store.read(fields.target, mmap=False)
    return score_test_fields(out_dir, store.box, RegionFields(truth, scored, draws), settings)


def evaluate_universes(
    net: FieldNet,
    fields: RunFields,
    stores: Sequence[FieldStore],
    hod_cfg: DictConfig,
    out_dir: Path,
    settings: EvaluationSettings,
    seed: int,
) -> list[dict[str, Any]]:
    """:func:`universe_row` of every store (``out_dir/universe_<i>``: its report); a universe
    without stellar mass (no P(k) to score) is left out with a warning."""
    hod = str(hod_cfg.get("name", "hod"))
    rows = []
    for i, store in enumerate(stores):
        if not store.read(fields.target).any():
            log.warning("%s: no stellar mass; universe left out", store.root)
            continue
        metrics = evaluate_universe(
            net, fields, store, hod_cfg, out_dir / f"universe_{i}", settings, seed
        )
        row = universe_row(read_parameters(store), metrics, net, hod)
        rows.append(row | {"store": str(store.root)})
    if not rows:
        raise ConfigError(
            f"data.source: none of the {len(stores)} universes scored holds stellar mass; "
            "nothing to score"
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
    HOD's means, the network mean's decorrelation ratio over the oracle's at k <= 1, P err
    (k <= 1) of their random fields, won or not), then mean +- std."""
    names = list(rows[0]["parameters"])
    head = [*names, "r net", "r HOD", "r oracle", "ratio net", "P err net", "P err HOD",
            "beats HOD"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        s = row["scores"]
        cells = [f"{row['parameters'][n]:.4g}" for n in names] + [
            f"{s['network_mean'][LARGE_RK]:.3f}",
            f"{s['hod_mean'][LARGE_RK]:.3f}",
            f"{s['oracle_mean'].get(LARGE_RK, float('nan')):.3f}",
            f"{s['network_mean'].get(LARGE_DECORRELATION, float('nan')):.2f}",
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
            pm("network_mean", LARGE_DECORRELATION),
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


def network_predict(
    net: FieldNet, fields: RunFields, settings: EvaluationSettings, seed: int
) -> Predict:
    """``predict(store)``: ``[mean, *draws]`` of :func:`whole_box_prediction` (a
    deterministic network's one field alone)."""

    def predict(store: FieldStore) -> list[np.ndarray]:
        out = whole_box_prediction(net, fields, store, settings, seed)
        return list(out) if isinstance(out, list) else [out]

    return predict


def hypercube_response(
    net: FieldNet, datamodule: Any, source: Any, settings: EvaluationSettings, seed: int
) -> dict[str, dict[str, Any]]:
    """For each parameter of ``source.response`` (deltas, IC seeds): d ln P / d theta per
    field and band of every seed's universe pair, their summary and the goal."""
    predict = network_predict(net, run_fields(datamodule), settings, seed)
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
    ``response``, its P(k) response; also on the centre universes of the response seeds
    (``centre``: where a network trained on the centre alone is compared); write
    ``hypercube.json``, ``hypercube.md``, ``scores_by_parameter.png`` and each universe's
    report into ``out_dir`` (whole, or not at all); return the ``hypercube.json`` content."""
    fields = run_fields(datamodule)
    tests = source.build_all(source.test_universes())
    centres = source.build_all([source.centre_universe(s) for s in source.response["seeds"]])
    with staged_dir(out_dir) as staging:
        rows = evaluate_universes(net, fields, tests, hod_cfg, staging, settings, seed)
        centre = evaluate_universes(
            net, fields, centres, hod_cfg, staging / "centre", settings, seed
        )
        result = {
            "universes": rows,
            "summary": summarise(rows),
            "centre": centre,
            "centre_summary": summarise(centre),
        }
        text = "## Unseen universes\n\n" + universes_markdown(rows, result["summary"])
        text += "\n## Unseen universes at the centre of the ranges\n\n"
        text += universes_markdown(centre, result["centre_summary"])
        if response:
            result["response"] = hypercube_response(net, datamodule, source, settings, seed)
            text += "\n## Response d ln P / d theta\n\n" + responses_markdown(result["response"])
        atomic_write_text(staging / RESULT_FILE, json.dumps(result, indent=2))
        atomic_write_text(staging / TABLE_FILE, text)
        score_by_parameter(rows, staging / PLOT_FILE)
    return result
