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
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


def _plot_pk(names: list[str], pk: dict[str, np.ndarray], k: np.ndarray) -> Figure:
    fig = Figure(figsize=(6, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name in ["truth", *names]:
        top.loglog(k, pk[name], label=name, color="k" if name == "truth" else None)
    for name in names:
        bottom.semilogx(k, pk[name] / pk["truth"], label=name)
    bottom.axhline(1.0, color="k", lw=0.8)
    top.set_ylabel(r"$P(k)\ [(h^{-1}\mathrm{Mpc})^3]$")
    bottom.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="ratio to truth")
    bottom.xaxis.set_minor_formatter(NullFormatter())
    top.legend()
    return fig


def _plot_rk(
    names: list[str], rk: dict[str, np.ndarray], k: np.ndarray, bands: Sequence[Band]
) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name in names:
        ax.semilogx(k, rk[name], label=name)
    for edge in band_edges(bands):
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


def _plot_pdf(names: list[str], pdf: dict[str, np.ndarray], edges: np.ndarray) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name in ["truth", *names]:
        style = {"color": "k"} if name == "truth" else {}
        ax.stairs(pdf[name], edges, label=name, **style)
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


def _pdf_edges(fields: Any, bins: int) -> np.ndarray:
    """``bins`` equal log10 bins spanning the non-empty voxels of ``fields``."""
    positive = [np.log10(f[f > 0]) for f in fields if (f > 0).any()]
    lo = min(p.min() for p in positive) if positive else 0.0
    hi = max(p.max() for p in positive) if positive else 1.0
    return np.linspace(lo, max(hi, lo + 1e-3), bins + 1)


def write_tables(out: Path, m: Measurements, options: ReportOptions) -> dict[str, Any]:
    """Write ``metrics.json`` and the CSV tables of ``m`` into ``out``; return the metrics:
    ``{"box", "grid", "k_max", "k_pairs", "bands": {band: [lo, hi]}, "models": {name: {metric:
    value}}}``."""
    names, fields = m.names, ["truth", *m.names]
    metrics = {
        "box": m.box,
        "grid": m.grid,
        "k_max": m.scores[names[0]]["k_max"],
        "k_pairs": [[float(k1), float(k2)] for k1, k2 in options.k_pairs],
        "bands": {b.name: [b.lo, b.hi] for b in m.bands},
        "models": m.scores,
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
        "pk": _plot_pk(m.names, m.pk, m.k),
        "rk": _plot_rk(m.names, m.rk, m.k, m.bands),
        "bk": _plot_bk(m.names, m.bk),
        "pdf": _plot_pdf(m.names, m.pdf, m.pdf_edges),
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
) -> dict[str, Any]:
    """Compare ``truth`` with each named prediction (same grid, box side ``box`` Mpc/h): measure,
    write the tables and the plots into ``out_dir``; return the metrics of ``metrics.json``
    (:func:`dm2gal.stats.base.scores` plus ``bk_ratio_abs_err``, the mean |B_pred / B_truth - 1|
    over every configured triangle, per prediction). ``logger``, when given, is called as
    ``logger(name, value_or_png_path)`` for every metric and plot (for W&B)."""
    options = options or ReportOptions()
    fields = check_fields(truth, predictions)
    m = measure(box, fields, options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = write_tables(out, m, options)
    plots = write_plots(out, m, fields, options.slice_width)
    if logger is not None:
        for name, scores in m.scores.items():
            for key, value in scores.items():
                logger(f"{name}/{key}", value)
        for stem, path in plots.items():
            logger(f"report/{stem}", str(path))
    return metrics
