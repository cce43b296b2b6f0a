"""Evaluation report: truth vs every prediction (models, HODs) as metrics, CSV tables and PNG plots.

Three steps, each its own function: :func:`measure` computes P(k), r(k), B(k1, k2, theta), the
voxel mass PDF and the scalar scores (with :mod:`dm2gal.stats.torch_backend`, torch, by
default; or the Pylians reference, ``ReportOptions.backend = "pylians"``) into
:class:`dm2gal.eval.measurements.Measurements`; :func:`write_tables` writes ``metrics.json``,
``pk.csv``, ``rk.csv``, ``bk.csv`` and ``pdf.csv``; :func:`dm2gal.eval.plots.write_plots` draws
``pk.png``, ``rk.png``, ``bk.png``, ``pdf.png`` and ``slices.png``. :func:`write_report` checks
the inputs and runs the three. Every file is written atomically. Units: k [h/Mpc],
P [(Mpc/h)^3], B [(Mpc/h)^6], masses Msun/h.

Beside the all-k means, every field is scored per k band (:mod:`dm2gal.stats.bands`:
``rk_mean_<band>``, ``pk_ratio_abs_err_<band>``, ``decorrelation_<band>``) and, when the
fields include the mock's oracles (the physical limits), by its decorrelation relative to the
oracle of its kind (``decorrelation_ratio_<band>``): a mean field's to ``oracle_mean``'s, a
draw's to ``oracle_draw``'s (:mod:`dm2gal.stats.field_kinds`).

A random field (a probabilistic network's draws) is given as several draws under one name
(``draws=`` of :func:`write_report`): every draw is measured, the field's curves and scores are
the means over its draws, ``metrics.json`` holds the draws' scores and their standard deviation
in its ``draws`` block, and the P(k), r(k) and PDF plots draw it as a mean +- std band.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dm2gal.eval.measurements import DrawSpread, Measurements
from dm2gal.eval.plots import write_plots
from dm2gal.io.store import atomic_path
from dm2gal.stats import base, pylians, torch_backend
from dm2gal.stats.bands import band_scores, decorrelation_ratios, parse_bands
from dm2gal.stats.base import Bispectrum
from dm2gal.stats.field_kinds import DRAW_INDEX, kind

Logger = Callable[[str, Any], None]
BACKENDS = ("torch", "pylians")
#: the fields whose decorrelation 1 - r^2 per band is the physical limit (mock sources only):
#: of a mean field, and of a draw
ORACLE_REFERENCES = {"mean": "oracle_mean", "draw": "oracle_draw"}


@dataclass(frozen=True)
class ReportOptions:
    """How a report measures (the ``evaluation.report`` config node).

    ``k_pairs`` are the bispectrum (k1, k2) configurations [h/Mpc] measured at angles ``thetas``
    [rad]; ``k_max`` [h/Mpc] bounds the scalar P(k) / r(k) scores (default: Nyquist);
    ``slice_width`` is the slab thickness (voxels) of ``slices.png``; ``pdf_bins`` the voxel PDF's
    bins; ``mas`` the window deconvolved; ``backend`` ``"torch"`` (on ``device``) or
    ``"pylians"`` (on ``threads`` threads); ``bands`` the k bands scored, ``{name: [lo, hi]}``
    in h/Mpc (None: :func:`dm2gal.stats.bands.default_bands` of the measured grid).
    """

    k_pairs: Sequence[tuple[float, float]] = base.DEFAULT_K_PAIRS
    thetas: Sequence[float] = field(default_factory=lambda: tuple(base.DEFAULT_THETAS))
    slice_width: int = 4
    pdf_bins: int = 40
    k_max: float | None = None
    mas: str | None = "CIC"
    backend: str = "torch"
    device: str = "cpu"
    threads: int = 1
    bands: Mapping[str, Sequence[float]] | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"evaluation.report.backend must be one of {BACKENDS}, got {self.backend!r}"
            )
        if int(self.slice_width) != self.slice_width or self.slice_width < 1:
            raise ValueError(
                f"evaluation.report.slice_width must be an integer >= 1, got {self.slice_width!r}"
            )
        if self.bands is not None:
            try:
                parse_bands(self.bands, 1.0, 2)
            except (ValueError, TypeError) as err:
                raise ValueError(f"evaluation.report.bands: {err}") from err

    def cross_power(self, a: np.ndarray, b: np.ndarray, box: float) -> base.CrossPower:
        if self.backend == "torch":
            return torch_backend.cross_power(a, b, box, self.mas, self.device)
        return pylians.cross_power(a, b, box, self.mas, self.threads)

    def bispectra(self, f: np.ndarray, box: float) -> list[Bispectrum]:
        if self.backend == "torch":
            return torch_backend.bispectra(f, box, self.k_pairs, self.thetas, self.mas, self.device)
        return pylians.bispectra(f, box, self.k_pairs, self.thetas, self.mas, self.threads)


def _write_csv(path: Path, header: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
    """Write equal-length columns as a CSV table with a header row, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(zip(*columns, strict=True))


def check_fields(truth: np.ndarray, predictions: Mapping[str, np.ndarray]) -> dict:
    """``{"truth": truth, **predictions}`` checked: float32 cubes of one shape, names distinct
    from ``truth``, at least one prediction."""
    truth = base.check_field(truth, "truth")
    if not predictions:
        raise ValueError("predictions is empty: give at least one named prediction field")
    if "truth" in predictions:
        raise ValueError("a prediction cannot be named 'truth'; that name is the reference")
    fields = {"truth": truth}
    for name, f in predictions.items():
        fields[name] = base.check_field(f, f"predictions[{name!r}]")
        if f.shape != truth.shape:
            raise ValueError(f"predictions[{name!r}] has shape {f.shape}, truth has {truth.shape}")
    return fields


def measure(
    box: float,
    fields: Mapping[str, np.ndarray],
    options: ReportOptions,
    pdf_edges: np.ndarray | None = None,
) -> Measurements:
    """Measure ``fields`` (``truth`` plus predictions, see :func:`check_fields`) of a periodic
    cube of side ``box`` Mpc/h; the voxel PDF on ``pdf_edges`` (log10 Msun/h; None: the
    fields' non-empty range in ``options.pdf_bins`` bins)."""
    truth, n = fields["truth"], fields["truth"].shape[0]
    names = [name for name in fields if name != "truth"]
    thetas = np.asarray(options.thetas, dtype=np.float64)
    for k1, k2 in options.k_pairs:
        base.check_triangle(k1, k2, thetas, box, n)
    if options.slice_width > n:
        raise ValueError(
            f"evaluation.report.slice_width must be <= {n} voxels, got {options.slice_width}"
        )
    cross = {name: options.cross_power(truth, fields[name], box) for name in names}
    bk = {name: options.bispectra(f, box) for name, f in fields.items()}
    edges = _pdf_edges(fields.values(), options.pdf_bins) if pdf_edges is None else pdf_edges
    bands = parse_bands(options.bands, box, n)
    scores = {}
    for name in names:
        s = base.scores(truth, fields[name], box, k_max=options.k_max, cross=cross[name])
        ratios = [np.abs(b.B / ref.B - 1.0) for b, ref in zip(bk[name], bk["truth"], strict=True)]
        s["bk_ratio_abs_err"] = float(np.mean(np.concatenate(ratios)))
        xp = cross[name]
        s |= band_scores(xp.k, xp.pk_b / xp.pk_a, xp.r, bands)
        scores[name] = s
    for which, reference in ORACLE_REFERENCES.items():
        group = {name: s for name, s in scores.items() if kind(name) == which}
        if reference in group:
            for name, ratios in decorrelation_ratios(group, bands, reference).items():
                scores[name] |= ratios
    first = cross[names[0]]
    return Measurements(
        box=float(box),
        grid=n,
        k=first.k,
        nmodes=first.nmodes,
        pk={"truth": first.pk_a} | {name: cross[name].pk_b for name in names},
        rk={name: cross[name].r for name in names},
        bk=bk,
        pdf_edges=edges,
        pdf={name: base.voxel_pdf(f, edges)[1] for name, f in fields.items()},
        scores=scores,
        bands=bands,
    )


def draw_key(name: str, draw: int) -> str:
    """A random field's draw's name while measuring."""
    return f"{name}{DRAW_INDEX}{draw}"


def draw_mean(values: Sequence[float]) -> float:
    """The mean of ``values``, exactly the value when all are equal (shifted first)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v[0] + np.mean(v - v[0]))


def measure_draws(
    box: float,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    draws: Mapping[str, Sequence[np.ndarray]],
    options: ReportOptions,
    pdf_edges: np.ndarray | None = None,
) -> Measurements:
    """:func:`measure` of the ``predictions`` and of every draw of each random field in
    ``draws`` (``{name: [draw, ...]}``, at least one each) against ``truth``, in one call: a
    random field's curves, bispectra and scores are the means over its draws, which
    ``Measurements.draws`` keeps (:class:`DrawSpread`)."""
    if clash := set(predictions) & set(draws):
        raise ValueError(f"{sorted(clash)}: a field is either a prediction or a set of draws")
    if empty := [name for name, xs in draws.items() if not len(xs)]:
        raise ValueError(f"draws: {empty} hold no draw")
    flat = dict(predictions) | {
        draw_key(name, i): x for name, xs in draws.items() for i, x in enumerate(xs)
    }
    m = measure(box, check_fields(truth, flat), options, pdf_edges)
    pk, rk, pdf, bk, scores = dict(m.pk), dict(m.rk), dict(m.pdf), dict(m.bk), dict(m.scores)
    spreads = {}
    for name, xs in draws.items():
        keys = [draw_key(name, i) for i in range(len(xs))]
        one = DrawSpread(
            pk=np.stack([pk.pop(k) for k in keys]),
            rk=np.stack([rk.pop(k) for k in keys]),
            pdf=np.stack([pdf.pop(k) for k in keys]),
            scores=[scores.pop(k) for k in keys],
        )
        pk[name], rk[name], pdf[name] = (c.mean(axis=0) for c in (one.pk, one.rk, one.pdf))
        scores[name] = {s: draw_mean([d[s] for d in one.scores]) for s in one.scores[0]}
        each = [bk.pop(k) for k in keys]
        bk[name] = [
            replace(
                ref,
                B=np.mean([b[p].B for b in each], axis=0),
                Q=np.mean([b[p].Q for b in each], axis=0),
            )
            for p, ref in enumerate(each[0])
        ]
        spreads[name] = one
    return replace(m, pk=pk, rk=rk, pdf=pdf, bk=bk, scores=scores, draws=spreads)


def _pdf_edges(fields: Any, bins: int) -> np.ndarray:
    """``bins`` equal log10 bins spanning the non-empty voxels of ``fields``."""
    positive = [np.log10(f[f > 0]) for f in fields if (f > 0).any()]
    lo = min(p.min() for p in positive) if positive else 0.0
    hi = max(p.max() for p in positive) if positive else 1.0
    return np.linspace(lo, max(hi, lo + 1e-3), bins + 1)


def write_tables(out: Path, m: Measurements, options: ReportOptions) -> dict[str, Any]:
    """Write ``metrics.json`` and the CSV tables of ``m`` into ``out``; return the metrics:
    ``{"box", "grid", "k_max", "k_pairs", "bands": {band: [lo, hi]}, "models": {name: {metric:
    value}}}`` and, with random fields, ``"draws": {name: {"count", "std": {metric: std},
    "values": {metric: [one per draw]}}}`` (``std`` with ddof=1, null for one draw; the
    field's value in ``models`` is the mean of ``values``)."""
    names, fields = m.names, ["truth", *m.names]
    metrics = {
        "box": m.box,
        "grid": m.grid,
        "k_max": m.scores[names[0]]["k_max"],
        "k_pairs": [[float(k1), float(k2)] for k1, k2 in options.k_pairs],
        "bands": {b.name: [b.lo, b.hi] for b in m.bands},
        "models": m.scores,
    }
    if m.draws:
        metrics["draws"] = {
            name: {
                "count": len(d.scores),
                "std": d.std(),
                "values": {key: [s[key] for s in d.scores] for key in d.scores[0]},
            }
            for name, d in m.draws.items()
        }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    _write_csv(
        out / "pk.csv",
        ["k", "nmodes", "pk_truth", *(f"pk_{n}" for n in names), *(f"ratio_{n}" for n in names)],
        [m.k, m.nmodes, *(m.pk[n] for n in fields)] + [m.pk[n] / m.pk["truth"] for n in names],
    )
    _write_csv(out / "rk.csv", ["k", *(f"r_{n}" for n in names)], [m.k, *(m.rk[n] for n in names)])
    rows = [
        (
            ref.k1,
            ref.k2,
            ref.theta[i],
            ref.k3[i],
            *(x for f in fields for x in (m.bk[f][p].B[i], m.bk[f][p].Q[i])),
        )
        for p, ref in enumerate(m.bk["truth"])
        for i in range(len(ref.theta))
    ]
    _write_csv(
        out / "bk.csv",
        ["k1", "k2", "theta", "k3", *(f"{q}_{f}" for f in fields for q in ("B", "Q"))],
        list(zip(*rows, strict=True)),
    )
    _write_csv(
        out / "pdf.csv",
        ["log10m_lo", "log10m_hi", *(f"pdf_{f}" for f in fields)],
        [m.pdf_edges[:-1], m.pdf_edges[1:], *(m.pdf[f] for f in fields)],
    )
    return metrics


def write_report(
    out_dir: str | Path,
    box: float,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    options: ReportOptions | None = None,
    logger: Logger | None = None,
    draws: Mapping[str, Sequence[np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Compare ``truth`` with each named prediction (same grid, box side ``box`` Mpc/h) and each
    random field of ``draws`` (``{name: [draw, ...]}``, scored as the mean over its draws, see
    :func:`measure_draws`): measure, write the tables and the plots into ``out_dir``; return the
    metrics of ``metrics.json`` (:func:`dm2gal.stats.base.scores` plus ``bk_ratio_abs_err``,
    the mean |B_pred / B_truth - 1| over every configured triangle, per prediction).
    ``logger``, when given, is called as ``logger(name, value_or_png_path)`` for every metric
    (a random field's std as ``<name>/<metric>/std``) and plot (for W&B)."""
    options = options or ReportOptions()
    draws = draws or {}
    m = measure_draws(box, truth, predictions, draws, options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = write_tables(out, m, options)
    slabs = {"truth": truth, **predictions} | {name: xs[0] for name, xs in draws.items()}
    plots = write_plots(out, m, slabs, options.slice_width)
    if logger is not None:
        for name, scores in m.scores.items():
            for key, value in scores.items():
                logger(f"{name}/{key}", value)
        for name, d in m.draws.items():
            for key, value in d.std().items():
                if value is not None:
                    logger(f"{name}/{key}/std", value)
        for stem, path in plots.items():
            logger(f"report/{stem}", str(path))
    return metrics
