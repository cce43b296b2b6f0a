"""The figures training draws (the validation callback's slices), shared with the evaluation
report (:mod:`dm2gal.eval.plots`), and how a figure is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dm2gal.io.store import atomic_path


def save_png(fig: Figure, path: Path) -> None:
    """Save a figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def plot_slices(fields: dict[str, np.ndarray], width: int, box: float) -> Figure:
    """One panel per field: ``log10(1 + M)`` of the central slab of ``width`` voxels along x,
    projected, on a common colour scale (axes in Mpc/h for a box of side ``box``)."""
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
