"""The documentation's figures, from a mock's field store: ``python docs/figures.py <store>``.

``docs/figures/oracle_pk_rk.png``: the P(k) ratio to the truth and r(k) with the truth of the
oracle's mean field and of an independent draw of the galaxy model (the physical limits of a
network's mean field and of its draws, docs/evaluation.md), whole box, CIC window corrected;
``docs/figures/oracle_slices.png``: a slab of the DM, the truth, the oracle mean and the draw.
Each is checked to be small enough to commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from dm2gal.eval.plots import save_png
from dm2gal.io.store import FieldStore
from dm2gal.stats.torch_backend import cross_power

OUT = Path(__file__).resolve().parent / "figures"
MAX_BYTES = 300_000
FIELDS = {"oracle_mean": "oracle mean (best possible r)", "oracle_draw": "oracle draw"}
SLAB = 4  # voxels summed along z in the slices


def pk_rk_figure(store: FieldStore) -> Figure:
    """P / P_truth and r(k) of each of :data:`FIELDS` against ``stellar``."""
    truth = np.asarray(store.read("stellar"))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ratio_ax, r_ax = fig.subplots(1, 2)
    for name, label in FIELDS.items():
        xp = cross_power(np.asarray(store.read(name)), truth, store.box, "CIC")
        ratio_ax.semilogx(xp.k, xp.pk_a / xp.pk_b, label=label)
        r_ax.semilogx(xp.k, xp.r, label=label)
    ratio_ax.axhline(1.0, color="0.6", lw=0.8)
    ratio_ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="P(k) / P_truth(k)")
    r_ax.set(xlabel=r"$k\ [h\,\mathrm{Mpc}^{-1}]$", ylabel="r(k) with the truth")
    for ax in (ratio_ax, r_ax):
        ax.legend(fontsize=8)
    fig.suptitle(f"mock universe, {store.box:g} Mpc/h, {store.grid}^3, whole box", fontsize=10)
    return fig


def slices_figure(store: FieldStore) -> Figure:
    """A ``SLAB``-voxel slab of the DM, the truth and :data:`FIELDS` (Msun/h per column)."""
    names = ["dm", "stellar", *FIELDS]
    fig = Figure(figsize=(3.2 * len(names), 3.4), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(names)), names, strict=True):
        slab = np.asarray(store.read(name)[:, :, :SLAB]).sum(axis=2)
        positive = slab[slab > 0]
        norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-5), vmax=positive.max())
        ax.imshow(np.where(slab > 0, slab, np.nan).T, origin="lower", norm=norm, cmap="magma")
        ax.set_title({"dm": "dark matter", "stellar": "truth"}.get(name, FIELDS.get(name)))
        ax.set_axis_off()
    return fig


def write_figures(store: FieldStore, out: Path = OUT) -> list[Path]:
    """Write both figures into ``out``; raise naming one too large to commit."""
    out.mkdir(exist_ok=True)
    paths = []
    for name, fig in (
        ("oracle_pk_rk", pk_rk_figure(store)),
        ("oracle_slices", slices_figure(store)),
    ):
        path = out / f"{name}.png"
        save_png(fig, path)
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, more than {MAX_BYTES}")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_figures(FieldStore(sys.argv[1])):
        print(written)
