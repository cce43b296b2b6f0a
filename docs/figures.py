"""The documentation's figures (PNG under ``docs/figures/``, each checked to be small enough to
commit):

``python docs/figures.py oracle <mock field store>``: ``oracle_pk_rk.png``, the P(k) ratio to
the truth and r(k) with the truth of the oracle's mean field and of an independent draw of the
galaxy model (the physical limits of a network's mean field and of its draws,
docs/evaluation.md), whole box, CIC window corrected; ``oracle_slices.png``: a slab of the DM,
the truth, the oracle mean and the draw.

``python docs/figures.py network <train run>``: from the run's evaluation (its held-out test
region's field store, ``<run>/evaluation/fields``, measured as its report measures, up to its
``k_max``),
``network_slices.png``: the truth, the network's mean and one draw, and the mean and a draw of
the strongest HOD (best r(k) among the HOD means); ``network_pk.png`` and ``network_rk.png``:
P(k) with its ratio to the truth and r(k) of those fields and the oracle's, the network's four
draws as mean +- std.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from dm2gal.eval.evaluation import EVALUATION_DIR, EvaluationSettings
from dm2gal.eval.headline import strongest_benchmark
from dm2gal.eval.plots import pk_figure, rk_figure
from dm2gal.io.store import FieldStore
from dm2gal.stats.bands import Band, band_edges
from dm2gal.stats.torch_backend import cross_power
from dm2gal.train.figures import plot_slices, save_png

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


def oracle_figures(store: FieldStore) -> dict[str, Figure]:
    """The oracle's figures of a mock's whole box, by file stem."""
    return {"oracle_pk_rk": pk_rk_figure(store), "oracle_slices": slices_figure(store)}


def network_figures(run_dir: Path) -> dict[str, Figure]:
    """The network's figures of a train run's held-out test region, by file stem."""
    evaluation = run_dir / EVALUATION_DIR
    scores = json.loads((evaluation / "metrics.json").read_text())
    store = FieldStore(evaluation / "fields")
    config = store.meta()["attrs"]["config"]["config"]
    report = EvaluationSettings.from_config(config["evaluation"]).report
    hod_mean = strongest_benchmark(scores["models"], "model_mean", "rk_mean")
    hod_draw = hod_mean.removesuffix("_mean") + "_draw"
    draws = sorted(f for f in store.fields() if f.startswith("model_draw_"))
    stacks = {
        "truth": ["truth"],
        "model_mean": ["model_mean"],
        "model_draw": draws,
        hod_mean: [hod_mean],
        hod_draw: [hod_draw],
        "oracle_mean": ["oracle_mean"],
        "oracle_draw": ["oracle_draw"],
    }
    truth = np.asarray(store.read("truth"))
    measured = {
        name: [cross_power(np.asarray(store.read(f)), truth, store.box, report.mas) for f in fields]
        for name, fields in stacks.items()
    }
    keep = measured["truth"][0].k <= scores["k_max"]  # as the report: up to its k_max
    k = measured["truth"][0].k[keep]
    pk = {name: np.stack([xp.pk_a[keep] for xp in xps]) for name, xps in measured.items()}
    rk = {name: np.stack([xp.r[keep] for xp in xps]) for name, xps in measured.items()}
    names = [name for name in stacks if name != "truth"]
    marks = band_edges([Band(name, lo, hi) for name, (lo, hi) in scores["bands"].items()])
    where = f"held-out {store.grid}^3 test region ({store.box:.3g} Mpc/h), {run_dir.name}"
    shown = {"truth": truth} | {
        name: np.asarray(store.read(name)) for name in ("model_mean", draws[0], hod_mean, hod_draw)
    }
    return {
        "network_slices": plot_slices(shown, report.slice_width, store.box),
        "network_pk": pk_figure(k, pk, names, title=where),
        "network_rk": rk_figure(k, rk, names, marks, title=where),
    }


def write_figures(figures: dict[str, Figure], out: Path = OUT) -> list[Path]:
    """Write ``figures`` into ``out`` as ``<stem>.png``; raise naming one too large to commit."""
    out.mkdir(exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = out / f"{name}.png"
        save_png(fig, path)
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, more than {MAX_BYTES}")
        paths.append(path)
    return paths


if __name__ == "__main__":
    kind, source = sys.argv[1], Path(sys.argv[2])
    made = {
        "oracle": lambda: oracle_figures(FieldStore(source)),
        "network": lambda: network_figures(source),
    }
    for written in write_figures(made[kind]()):
        print(written)
