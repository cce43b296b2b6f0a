"""Whole-box realisations: score a trained run on universes it never saw, with mean +- std.

Each realisation is a field store of a whole periodic box: a further mock universe (the run's
mock settings, another seed, built through the mock's cache) or any given store with the run's
input and target fields and voxel size. On each, the network predicts the whole box (periodic
tiling, no sub-cube wrap-around; a probabilistic network gives its mean ``model_mean`` and its
draws ``model_draw`` from the same forward passes), every HOD fitted on the run's training
region gives its mean field and is drawn on the box's halos several times, and the oracle
fields are added where the store has them. Every field is measured against the box's truth like the
held-out report (:func:`dm2gal.eval.report.measure_draws`, k bands included; a random field's
scores on a box are the means over its draws), then summarised over realisations
(:mod:`dm2gal.eval.aggregate`). Written into ``out_dir``: ``realisations.json``,
``realisations_boxes.json`` (the stores, in order), ``realisations.md`` and
``realisations/{pk,rk,pdf}.png`` (mean +- std bands over realisations).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dm2gal.data.regions import Region
from dm2gal.eval.aggregate import compare, markdown, summarise
from dm2gal.eval.plots import field_colors, pk_figure, plot_band, rk_figure, save_png
from dm2gal.eval.references import oracle_fields, paint_hods
from dm2gal.eval.report import ReportOptions, measure_draws
from dm2gal.hod import HOD
from dm2gal.io.store import FieldStore, atomic_path
from dm2gal.stats.bands import band_edges, parse_bands

log = logging.getLogger(__name__)

JSON_FILE, MARKDOWN_FILE, PLOTS_DIR = "realisations.json", "realisations.md", "realisations"
#: the stores scored, one per value of ``realisations.json``: runs scored on the same universes
#: share them (:func:`dm2gal.eval.limits.per_box`)
BOXES_FILE = "realisations_boxes.json"
#: the network's fields: a deterministic network's ``model``, a probabilistic one's ``model_mean``
#: and ``model_draw``, and the calibrated ``model`` or ``model_mean``
NETWORKS = ("model", "model_mean", "model_draw", "model_calibrated")
#: the curves kept per realisation, and whether the truth's is among them
CURVES = (("pk", ["truth"]), ("rk", []), ("pdf", ["truth"]))


def whole_box(store: FieldStore) -> Region:
    """The region covering every voxel of ``store``'s periodic box."""
    return Region((0, 0, 0), (store.grid,) * 3, store.grid)


def mock_realisations(source: Any, count: int, first_seed: int) -> list[FieldStore]:
    """``count`` further universes of ``source`` (seeds ``first_seed + i``), built or loaded
    from its cache; ``source`` must offer ``realisation(seed)`` (the mock does)."""
    if count == 0:
        return []
    if not hasattr(source, "realisation"):
        raise ValueError(
            f"evaluation.realisations: the run's data source ({type(source).__name__}) cannot "
            "generate other realisations; give field stores with evaluation.stores=[...]"
        )
    seeds = [first_seed + i for i in range(count)]
    if getattr(source, "seed", None) in seeds:
        raise ValueError(
            f"evaluation.realisation_seed: the seeds {seeds} include the run's own seed "
            f"{source.seed} (the universe the network was trained on)"
        )
    return [source.realisation(seed).build() for seed in seeds]


@dataclass(frozen=True)
class Realisation:
    """One box's scores ``{field: [one dict per draw]}`` and curves per field (mean over
    draws): ``pk`` (truth included) [(Mpc/h)^3], ``rk`` and ``pdf`` (per log10-mass bin)."""

    source: str
    scores: dict[str, list[dict[str, float]]]
    pk: dict[str, np.ndarray]
    rk: dict[str, np.ndarray]
    pdf: dict[str, np.ndarray]


def network_fields(prediction: np.ndarray | Sequence[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The network's fields from its prediction, each a list of draws: ``model`` for one field,
    ``model_mean`` and ``model_draw`` (its draws) for a probabilistic network's ``[mean, draw,
    ...]`` (as :func:`dm2gal.infer.predict.predict_fields` returns with ``seeds``)."""
    if isinstance(prediction, np.ndarray):
        return {"model": [prediction]}
    mean, *draws = prediction
    return {"model_mean": [mean]} | ({"model_draw": draws} if draws else {})


def realisation_fields(
    store: FieldStore,
    prediction: np.ndarray | Sequence[np.ndarray],
    calibrate: Callable[[np.ndarray], np.ndarray] | None,
    hods: Mapping[str, HOD],
    hod_draws: int,
    seed: int,
) -> dict[str, list[np.ndarray]]:
    """The fields scored on one box, each a list of draws: the network's whole-box prediction
    (:func:`network_fields`) and ``model_calibrated`` (its calibrated ``model`` or
    ``model_mean``), every HOD painted ``hod_draws`` times on the store's halos (seeds
    ``seed + d``) when it has catalogues, and the oracle fields it holds."""
    fields = network_fields(prediction)
    if calibrate is not None:
        fields["model_calibrated"] = [calibrate(next(iter(fields.values()))[0])]
    fields.update(paint_hods(hods, store, [seed + d for d in range(hod_draws)]))
    fields.update({name: [field] for name, field in oracle_fields(store).items()})
    return fields


def pdf_edges(fields: Sequence[np.ndarray], bins: int, margin: float = 0.5) -> np.ndarray:
    """Common log10(M per voxel) bin edges for every realisation: the non-empty range of
    ``fields`` (those of the first realisation) widened by ``margin`` dex on each side."""
    positive = [np.log10(f[f > 0]) for f in fields if (f > 0).any()]
    if not positive:
        raise ValueError("no field of the first realisation has a non-empty voxel")
    lo = min(p.min() for p in positive) - margin
    hi = max(p.max() for p in positive) + margin
    return np.linspace(lo, hi, bins + 1)


def score_realisation(
    source: str,
    truth: np.ndarray,
    fields: Mapping[str, Sequence[np.ndarray]],
    box: float,
    options: ReportOptions,
    edges: np.ndarray,
) -> tuple[Realisation, np.ndarray]:
    """Measure every draw of every field against ``truth`` in one :func:`measure_draws` call (a
    field of several draws is random, one of a single draw is a prediction); return the
    realisation's scores and curves, and the bins' k [h/Mpc]."""
    single = {f: draws[0] for f, draws in fields.items() if len(draws) == 1}
    random = {f: draws for f, draws in fields.items() if len(draws) > 1}
    m = measure_draws(box, truth, single, random, options, pdf_edges=edges)
    scores = {f: m.draws[f].scores if f in m.draws else [m.scores[f]] for f in fields}
    curves = [{f: getattr(m, what)[f] for f in [*keep, *fields]} for what, keep in CURVES]
    return Realisation(source, scores, *curves), m.k


def plot_realisations(
    out: Path, k: np.ndarray, edges: np.ndarray, runs: Sequence[Realisation], marks: list[float]
) -> dict[str, Path]:
    """``pk.png`` (P(k) and P/P_true), ``rk.png`` (k-band edges ``marks`` dotted) and
    ``pdf.png``: mean +- std over ``runs``, one colour per field (truth black)."""
    names = [f for f in runs[0].pk if f != "truth"]
    colors = field_colors(names)
    stack = {
        what: {f: np.array([getattr(r, what)[f] for r in runs]) for f in getattr(runs[0], what)}
        for what in ("pk", "rk", "pdf")
    }
    title = f"mean ± std over {len(runs)} realisation(s)"
    fig_pk = pk_figure(k, stack["pk"], names, title)
    fig_rk = rk_figure(k, stack["rk"], names, marks, title)
    fig_pdf = Figure(figsize=(6, 4))
    ax = fig_pdf.subplots()
    centres = 0.5 * (edges[1:] + edges[:-1])
    for f in ["truth", *names]:
        plot_band(ax, centres, stack["pdf"][f], f, colors[f])
    ax.set(yscale="log", xlabel=r"$\log_{10}(M\ /\ h^{-1}M_\odot)$ per voxel", title=title)
    ax.set_ylabel("PDF (all voxels)")
    ax.legend(fontsize="small")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, fig in (("pk", fig_pk), ("rk", fig_rk), ("pdf", fig_pdf)):
        paths[stem] = out / f"{stem}.png"
        save_png(fig, paths[stem])
    return paths


def evaluate_realisations(
    stores: Sequence[FieldStore],
    predict: Callable[[FieldStore], np.ndarray | Sequence[np.ndarray]],
    target: str,
    out_dir: str | Path,
    options: ReportOptions,
    *,
    calibrate: Callable[[np.ndarray], np.ndarray] | None = None,
    hods: Mapping[str, HOD] | None = None,
    hod_draws: int = 3,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """Score ``predict`` (a whole-box prediction of a store, or a probabilistic network's mean
    and draws, :func:`network_fields`), its calibration, the fitted
    ``hods`` and the oracles on every store in ``stores`` (one realisation each, all of one box
    and grid); write ``realisations.json``, ``realisations.md`` and the mean +- std plots into
    ``out_dir``; return the summary (the JSON's content)."""
    if not stores:
        raise ValueError("evaluation: no realisation to score (realisations = 0 and no stores)")
    if int(hod_draws) != hod_draws or hod_draws < 1:
        raise ValueError(f"evaluation.hod_draws must be an integer >= 1, got {hod_draws!r}")
    first = stores[0]
    for store in stores:
        if target not in store.fields():
            raise ValueError(f"{store.root}: no target field '{target}' to score against")
        if (store.box, store.grid) != (first.box, first.grid):
            raise ValueError(
                f"{store.root}: a {store.grid}^3 box of {store.box} Mpc/h; realisations must "
                f"share the first one's {first.grid}^3 box of {first.box} Mpc/h ({first.root})"
            )
    runs, edges, k = [], None, None
    for i, store in enumerate(stores):
        log.info("realisation %d/%d: %s", i + 1, len(stores), store.root)
        truth = store.read(target, mmap=False)
        fields = realisation_fields(store, predict(store), calibrate, hods or {}, hod_draws, seed)
        if edges is None:
            every = [truth, *(x for draws in fields.values() for x in draws)]
            edges = pdf_edges(every, options.pdf_bins)
        run, k = score_realisation(str(store.root), truth, fields, store.box, options, edges)
        runs.append(run)
    summary = summarise([r.scores for r in runs])
    references = [f for f in summary if f.startswith("hod_")]
    comparisons = compare(summary, NETWORKS, references)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / JSON_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    with atomic_path(out / BOXES_FILE) as tmp:
        tmp.write_text(json.dumps([str(Path(r.source).resolve()) for r in runs], indent=2))
    with atomic_path(out / MARKDOWN_FILE) as tmp:
        tmp.write_text(markdown(summary, comparisons, [r.source for r in runs]))
    bands = parse_bands(options.bands, first.box, first.grid)
    plot_realisations(out / PLOTS_DIR, k, edges, runs, band_edges(bands))
    return summary
