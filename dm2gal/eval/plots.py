"""The evaluation report's PNG plots, drawn with matplotlib's Agg canvas and written atomically:
``pk.png`` (P(k) with a ratio panel), ``rk.png`` (k-band edges dotted), ``bk.png`` (B(theta)
with a ratio panel per (k1, k2) pair), ``pdf.png`` and ``slices.png`` (projected slabs, truth |
each prediction); a random field is drawn as a mean +- std band over its draws. Also the helpers
other figures share (:func:`save_png`, :func:`plot_band`, :func:`pk_figure`,
:func:`rk_figure`, :func:`plot_slices`). Units: k
[h/Mpc], P [(Mpc/h)^3], B [(Mpc/h)^6], masses Msun/h, lengths Mpc/h.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from dm2gal.eval.measurements import Measurements
from dm2gal.stats.bands import band_edges
from dm2gal.stats.base import Bispectrum
from dm2gal.train.figures import plot_slices, save_png

PLOTS = ("pk", "rk", "bk", "pdf", "slices")


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


def field_colors(names: list[str]) -> dict[str, str]:
    """One colour per field of ``names`` (the truth black)."""
    return {"truth": "k"} | {name: f"C{i}" for i, name in enumerate(names)}


def pk_figure(
    k: np.ndarray, pk: Mapping[str, np.ndarray], names: list[str], title: str | None = None
) -> Figure:
    """P(k) of the truth and of ``names``, with a ratio-to-truth panel: each field's stack of
    curves (curves x k, :func:`plot_band`) in ``pk``."""
    fig = Figure(figsize=(6, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    colors = field_colors(names)
    for name in ["truth", *names]:
        plot_band(top, k, pk[name], name, colors[name])
    for name in names:
        plot_band(bottom, k, pk[name] / pk["truth"], name, colors[name])
    bottom.axhline(1.0, color="k", lw=0.8)
    top.set(xscale="log", yscale="log", ylabel=r"$P(k)\ [(h^{-1}\mathrm{Mpc})^3]$", title=title)
    bottom.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="ratio to truth")
    bottom.xaxis.set_minor_formatter(NullFormatter())
    top.legend(fontsize="small")
    return fig


def rk_figure(
    k: np.ndarray,
    rk: Mapping[str, np.ndarray],
    names: list[str],
    marks: list[float],
    title: str | None = None,
) -> Figure:
    """r(k) with the truth of ``names`` (stacks of curves as in :func:`pk_figure`), the k-band
    edges ``marks`` dotted."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    colors = field_colors(names)
    for name in names:
        plot_band(ax, k, rk[name], name, colors[name])
    for edge in marks:
        ax.axvline(edge, color="grey", lw=0.6, ls=":")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel=r"$r(k)$ with truth")
    ax.set_title(title)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small")
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
    colors = field_colors(m.names)
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


def write_plots(
    out: Path, m: Measurements, fields: Mapping[str, np.ndarray], slice_width: int
) -> dict[str, Path]:
    """Draw the report's PNG plots of ``m`` (and slices of ``fields``) into ``out``."""
    figures = {
        "pk": pk_figure(m.k, _curves(m, "pk"), m.names),
        "rk": rk_figure(m.k, _curves(m, "rk"), m.names, band_edges(m.bands)),
        "bk": _plot_bk(m.names, m.bk),
        "pdf": _plot_pdf(m),
        "slices": plot_slices(dict(fields), int(slice_width), m.box),
    }
    paths = {}
    for stem, fig in figures.items():
        paths[stem] = out / f"{stem}.png"
        save_png(fig, paths[stem])
    return paths
