"""Evaluation report: truth vs every prediction (models, HODs) as metrics, CSV tables and PNG plots.

Three steps, each its own function: :func:`measure` computes P(k), r(k), B(k1, k2, theta), the
voxel mass PDF and the scalar scores (with :mod:`dm2gal.stats.fast`, torch, by default; or the
Pylians reference, ``ReportOptions.backend = "pylians"``); :func:`write_tables` writes
``metrics.json``, ``pk.csv``, ``rk.csv``, ``bk.csv`` and ``pdf.csv``; :func:`write_plots` draws
``pk.png`` (P(k) with a ratio panel), ``rk.png``, ``bk.png`` (B(theta) with a ratio panel per
(k1, k2) pair), ``pdf.png`` and ``slices.png`` (projected slabs, truth | each prediction) with
matplotlib's Agg canvas. :func:`write_report` checks the inputs and runs the three. Every file is
written atomically. Units: k [h/Mpc], P [(Mpc/h)^3], B [(Mpc/h)^6], masses Msun/h.

Beside the all-k means, every field is scored per k band (:mod:`dm2gal.stats.bands`:
``rk_mean_<band>``, ``pk_ratio_abs_err_<band>``, ``decorrelation_<band>``) and, when the
fields include the mock's ``oracle_mean`` (the physical limit of r(k)), by its decorrelation
relative to the oracle's (``decorrelation_ratio_<band>``).

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
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from dm2gal.io.store import atomic_path
from dm2gal.stats import base, fast, pylians
from dm2gal.stats.bands import Band, band_edges, band_scores, decorrelation_ratios, parse_bands
from dm2gal.stats.base import Bispectrum

Logger = Callable[[str, Any], None]
PLOTS = ("pk", "rk", "bk", "pdf", "slices")
BACKENDS = ("torch", "pylians")
#: the field whose decorrelation 1 - r^2 per band is the physical limit (mock sources only)
ORACLE_REFERENCE = "oracle_mean"
#: separates a random field's name from its draw number while measuring
DRAW = "#"


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
            return fast.cross_power(a, b, box, self.mas, self.device)
        return pylians.cross_power(a, b, box, self.mas, self.threads)

    def bispectra(self, f: np.ndarray, box: float) -> list[Bispectrum]:
        if self.backend == "torch":
            return fast.bispectra(f, box, self.k_pairs, self.thetas, self.mas, self.device)
        return pylians.bispectra(f, box, self.k_pairs, self.thetas, self.mas, self.threads)


@dataclass(frozen=True)
class DrawSpread:
    """A random field's draws as measured: ``pk``, ``rk`` and ``pdf`` stacked (draws x points)
    and the scores of each draw (the field's own curves and scores are their means)."""

    pk: np.ndarray
    rk: np.ndarray
    pdf: np.ndarray
    scores: list[dict[str, float]]

    def std(self) -> dict[str, float | None]:
        """Each score's sample standard deviation over the draws (ddof=1; None for one draw)."""
        return {key: spread([s[key] for s in self.scores]) for key in self.scores[0]}


def spread(values: Sequence[float]) -> float | None:
    """Sample std (ddof=1; None for one value), exactly 0 for equal values (shifted first)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.std(v - v[0], ddof=1)) if len(v) > 1 else None


@dataclass(frozen=True)
class Measurements:
    """Everything a report shows, per field name (``truth`` first, then each prediction)."""

    box: float
    grid: int
    k: np.ndarray
    nmodes: np.ndarray
    pk: dict[str, np.ndarray]
    rk: dict[str, np.ndarray]
    bk: dict[str, list[Bispectrum]]
    pdf_edges: np.ndarray
    pdf: dict[str, np.ndarray]
    scores: dict[str, dict[str, float]]
    bands: tuple[Band, ...]
    draws: dict[str, DrawSpread] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The predictions' names."""
        return list(self.scores)


def _write_csv(path: Path, header: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
    """Write equal-length columns as a CSV table with a header row, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(zip(*columns, strict=True))


def save_png(fig: Figure, path: Path) -> None:
    """Save a figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def mean_std(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1; 0 for one curve) of ``curves`` (curves x points)."""
    mean = curves.mean(axis=0)
    return mean, curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)


def plot_band(ax: Any, x: np.ndarray, curves: np.ndarray, label: str, color: str) -> None:
    """Mean line and a +- std band of ``curves`` (curves x points, :func:`mean_std`)."""
    mean, std = mean_std(curves)
    ax.plot(x, mean, label=label, color=color)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, lw=0)


def _curves(m: Measurements, what: str) -> dict[str, np.ndarray]:
    """Each field's ``what`` curve (``pk``, ``rk``, ``pdf``) as a stack: its draws' for a random
    field, the one curve otherwise."""
    own = getattr(m, what)
    return {f: getattr(m.draws[f], what) if f in m.draws else own[f][None] for f in own}


def _colors(names: list[str]) -> dict[str, str]:
    return {"truth": "k"} | {name: f"C{i}" for i, name in enumerate(names)}


def _plot_pk(m: Measurements) -> Figure:
    fig = Figure(figsize=(6, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    pk, colors = _curves(m, "pk"), _colors(m.names)
    for name in ["truth", *m.names]:
        plot_band(top, m.k, pk[name], name, colors[name])
    for name in m.names:
        plot_band(bottom, m.k, pk[name] / pk["truth"], name, colors[name])
    bottom.axhline(1.0, color="k", lw=0.8)
    top.set(xscale="log", yscale="log", ylabel=r"$P(k)\ [(h^{-1}\mathrm{Mpc})^3]$")
    bottom.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="ratio to truth")
    bottom.xaxis.set_minor_formatter(NullFormatter())
    top.legend()
    return fig


def _plot_rk(m: Measurements) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    rk, colors = _curves(m, "rk"), _colors(m.names)
    for name in m.names:
        plot_band(ax, m.k, rk[name], name, colors[name])
    ax.set_xscale("log")
    for edge in band_edges(m.bands):
        ax.axvline(edge, color="grey", lw=0.6, ls=":")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel=r"$r(k)$ with truth")
    ax.legend()
    return fig


def _plot_bk(names: list[str], bk: dict[str, list[Bispectrum]]) -> Figure:
    pairs = len(bk["truth"])
    fig = Figure(figsize=(5 * pairs, 6))
    axes = fig.subplots(2, pairs, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1]})
    for p, ref in enumerate(bk["truth"]):
        top, bottom = axes[0, p], axes[1, p]
        for name in ["truth", *names]:
            top.plot(ref.theta, bk[name][p].B, label=name, color="k" if name == "truth" else None)
        for name in names:
            bottom.plot(ref.theta, bk[name][p].B / ref.B, label=name)
        bottom.axhline(1.0, color="k", lw=0.8)
        top.set_title(rf"$k_1={ref.k1:g},\ k_2={ref.k2:g}\ h\,\mathrm{{Mpc}}^{{-1}}$")
        top.set_ylabel(r"$B\ [(h^{-1}\mathrm{Mpc})^6]$")
        bottom.set(xlabel=r"$\theta$ [rad]", ylabel="ratio to truth")
    axes[0, 0].legend()
    return fig


def _plot_pdf(m: Measurements) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    colors = _colors(m.names)
    for name in ["truth", *m.names]:
        ax.stairs(m.pdf[name], m.pdf_edges, label=name, color=colors[name])
        if name in m.draws:  # the draws' +- std band
            mean, std = mean_std(m.draws[name].pdf)
            band = {"baseline": mean - std, "fill": True, "color": colors[name], "alpha": 0.25}
            ax.stairs(mean + std, m.pdf_edges, lw=0, **band)
    ax.set_yscale("log")
    ax.set(xlabel=r"$\log_{10}(M\ /\ h^{-1}M_\odot)$ per voxel", ylabel="PDF (all voxels)")
    ax.legend()
    return fig


def plot_slices(fields: dict[str, np.ndarray], width: int, box: float) -> Figure:
    n = next(iter(fields.values())).shape[0]
    lo = (n - width) // 2
    slabs = {
        k: np.log10(1.0 + v[lo : lo + width].sum(axis=0, dtype=np.float64))
        for k, v in fields.items()
    }
    vmin, vmax = min(s.min() for s in slabs.values()), max(s.max() for s in slabs.values())
    fig = Figure(figsize=(4 * len(slabs), 4.4))
    axes = fig.subplots(1, len(slabs), squeeze=False)[0]
    for ax, (name, slab) in zip(axes, slabs.items(), strict=True):
        image = ax.imshow(slab.T, origin="lower", extent=(0, box, 0, box), vmin=vmin, vmax=vmax)
        ax.set(title=name, xlabel=r"$y\ [h^{-1}\mathrm{Mpc}]$")
    axes[0].set_ylabel(r"$z\ [h^{-1}\mathrm{Mpc}]$")
    fig.colorbar(image, ax=list(axes), label=rf"$\log_{{10}}(1 + M_{{\rm slab}})$, {width} voxels")
    return fig


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
    if ORACLE_REFERENCE in scores:
        for name, ratios in decorrelation_ratios(scores, bands, ORACLE_REFERENCE).items():
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
    return f"{name}{DRAW}{draw}"


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


def write_plots(
    out: Path, m: Measurements, fields: Mapping[str, np.ndarray], slice_width: int
) -> dict[str, Path]:
    """Draw the report's PNG plots of ``m`` (and slices of ``fields``) into ``out``."""
    figures = {
        "pk": _plot_pk(m),
        "rk": _plot_rk(m),
        "bk": _plot_bk(m.names, m.bk),
        "pdf": _plot_pdf(m),
        "slices": plot_slices(dict(fields), int(slice_width), m.box),
    }
    paths = {}
    for stem, fig in figures.items():
        paths[stem] = out / f"{stem}.png"
        save_png(fig, paths[stem])
    return paths


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
