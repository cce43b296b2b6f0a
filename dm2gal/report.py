"""Evaluation report: truth vs every prediction (models, HODs) as metrics, CSV tables and PNG plots.

``write_report`` measures P(k), r(k), B(k1, k2, theta), the voxel mass PDF and scalar scores
with ``dm2gal.stats`` (Pylians) and writes, each file atomically, into ``out_dir``:
``metrics.json``, ``pk.csv``, ``rk.csv``, ``bk.csv``, ``pdf.csv`` and ``pk.png`` (P(k) with a
ratio panel), ``rk.png``, ``bk.png`` (B(theta) with a ratio panel per (k1, k2) pair), ``pdf.png``
and ``slices.png`` (projected slabs, truth | each prediction). Plots use matplotlib's Agg canvas.
Units: k [h/Mpc], P [(Mpc/h)^3], B [(Mpc/h)^6], masses Msun/h.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from dm2gal import stats
from dm2gal.io.store import atomic_path

Logger = Callable[[str, Any], None]
PLOTS = ("pk", "rk", "bk", "pdf", "slices")


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


def _plot_rk(names: list[str], rk: dict[str, np.ndarray], k: np.ndarray) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name in names:
        ax.semilogx(k, rk[name], label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel=r"$r(k)$ with truth")
    ax.legend()
    return fig


def _plot_bk(names: list[str], bk: dict[str, list[stats.Bispectrum]]) -> Figure:
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


def write_report(
    out_dir: str | Path,
    box: float,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    k_pairs: Sequence[tuple[float, float]] = stats.DEFAULT_K_PAIRS,
    thetas: Sequence[float] | np.ndarray = stats.DEFAULT_THETAS,
    slice_width: int = 4,
    pdf_bins: int = 40,
    k_max: float | None = None,
    mas: str | None = "CIC",
    threads: int = 1,
    logger: Logger | None = None,
) -> dict[str, Any]:
    """Compare ``truth`` with each named prediction (same grid, box side ``box`` Mpc/h).

    ``k_pairs`` are the bispectrum (k1, k2) configurations [h/Mpc] measured at angles
    ``thetas`` [rad]; ``slice_width`` is the slab thickness (voxels) of ``slices.png``;
    ``k_max`` [h/Mpc] bounds the scalar P(k) / r(k) scores (see ``stats.summary``). ``logger``,
    when given, is called as ``logger(name, value_or_png_path)`` for every metric and plot (for
    W&B). Returns the metrics written to ``metrics.json``: ``{"box", "grid", "k_max", "k_pairs",
    "models": {name: {metric: value}}}`` where each model's metrics add ``bk_ratio_abs_err``
    (mean |B_pred / B_truth - 1| over every configured triangle) to ``stats.summary``'s.
    """
    truth = stats.check_field(truth, "truth")
    n = truth.shape[0]
    if not predictions:
        raise ValueError("predictions is empty: give at least one named prediction field")
    names = list(predictions)
    if "truth" in names:
        raise ValueError("a prediction cannot be named 'truth'; that name is the reference")
    preds = {
        name: stats.check_field(f, f"predictions[{name!r}]") for name, f in predictions.items()
    }
    for name, f in preds.items():
        if f.shape != truth.shape:
            raise ValueError(f"predictions[{name!r}] has shape {f.shape}, truth has {truth.shape}")
    if int(slice_width) != slice_width or not 1 <= slice_width <= n:
        raise ValueError(f"slice_width must be an integer in 1..{n} voxels, got {slice_width}")
    thetas = np.asarray(thetas, dtype=np.float64)
    for k1, k2 in k_pairs:
        stats.check_triangle(k1, k2, thetas, box, n)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = {"truth": truth, **preds}

    cross = {name: stats.cross_power(truth, preds[name], box, mas, threads) for name in names}
    k = cross[names[0]].k
    pk = {"truth": cross[names[0]].pk_a} | {name: cross[name].pk_b for name in names}
    rk = {name: cross[name].r for name in names}
    bk = {
        name: [stats.bispectrum(f, box, k1, k2, thetas, mas, threads) for k1, k2 in k_pairs]
        for name, f in fields.items()
    }
    positive = [np.log10(f[f > 0]) for f in fields.values() if (f > 0).any()]
    lo = min(p.min() for p in positive) if positive else 0.0
    hi = max(p.max() for p in positive) if positive else 1.0
    edges = np.linspace(lo, max(hi, lo + 1e-3), pdf_bins + 1)
    pdf = {name: stats.voxel_pdf(f, edges)[1] for name, f in fields.items()}

    models = {}
    for name in names:
        scores = stats.summary(truth, preds[name], box, k_max=k_max, mas=mas, cross=cross[name])
        ratios = [np.abs(b.B / ref.B - 1.0) for b, ref in zip(bk[name], bk["truth"], strict=True)]
        scores["bk_ratio_abs_err"] = float(np.mean(np.concatenate(ratios)))
        models[name] = scores
    metrics = {
        "box": float(box),
        "grid": n,
        "k_max": models[names[0]]["k_max"],
        "k_pairs": [[float(k1), float(k2)] for k1, k2 in k_pairs],
        "models": models,
    }

    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    _write_csv(
        out / "pk.csv",
        ["k", "nmodes", "pk_truth", *(f"pk_{m}" for m in names), *(f"ratio_{m}" for m in names)],
        [k, cross[names[0]].nmodes, *(pk[m] for m in ["truth", *names])]
        + [pk[m] / pk["truth"] for m in names],
    )
    _write_csv(out / "rk.csv", ["k", *(f"r_{m}" for m in names)], [k, *(rk[m] for m in names)])
    rows = [
        (
            ref.k1,
            ref.k2,
            ref.theta[i],
            ref.k3[i],
            *(x for m in fields for x in (bk[m][p].B[i], bk[m][p].Q[i])),
        )
        for p, ref in enumerate(bk["truth"])
        for i in range(len(thetas))
    ]
    _write_csv(
        out / "bk.csv",
        ["k1", "k2", "theta", "k3", *(f"{q}_{m}" for m in fields for q in ("B", "Q"))],
        list(zip(*rows, strict=True)),
    )
    _write_csv(
        out / "pdf.csv",
        ["log10m_lo", "log10m_hi", *(f"pdf_{m}" for m in fields)],
        [edges[:-1], edges[1:], *(pdf[m] for m in fields)],
    )
    figures = {
        "pk": _plot_pk(names, pk, k),
        "rk": _plot_rk(names, rk, k),
        "bk": _plot_bk(names, bk),
        "pdf": _plot_pdf(names, pdf, edges),
        "slices": plot_slices(fields, int(slice_width), box),
    }
    for stem, fig in figures.items():
        save_png(fig, out / f"{stem}.png")

    if logger is not None:
        for name, scores in models.items():
            for key, value in scores.items():
                logger(f"{name}/{key}", value)
        for stem in PLOTS:
            logger(f"report/{stem}", str(out / f"{stem}.png"))
    return metrics
