"""Scores per k band: r(k), |P/P_true - 1| and the decorrelation 1 - r^2 on large to small scales.

A band is a half-open wavenumber interval ``(lo, hi]`` [h/Mpc] holding the P(k) bins whose
mean k falls in it. The defaults follow the grid of the measured cube (side ``box`` Mpc/h,
``grid`` voxels, Nyquist ``kN = (grid // 2) 2 pi / box``):

* ``large``: ``k <= 1 h/Mpc`` (the two-halo, linear-bias regime);
* ``intermediate``: ``1 < k <= k_mid`` with ``k_mid = sqrt(1 * kN / 2)``, the geometric midpoint;
* ``small``: ``k_mid < k <= kN / 2`` (one-halo scales the grid still resolves well);
* ``rest``: ``kN / 2 < k <= kN`` (near Nyquist, where the CIC window dominates).

When ``kN / 2 <= 1 h/Mpc`` the large band ends at ``kN / 2`` and intermediate and small are
empty. A band without a bin is left out of the scores. Each band's score is the plain mean over
its bins (as the all-k means of :func:`dm2gal.stats.base.scores`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LARGE_K = 1.0  # h/Mpc: upper edge of the large-scale band
BAND_METRICS = ("rk_mean", "pk_ratio_abs_err", "decorrelation")
RATIO_METRIC = "decorrelation_ratio"


@dataclass(frozen=True)
class Band:
    """Wavenumber band ``lo < k <= hi`` [h/Mpc] called ``name``."""

    name: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and 0 <= self.lo < self.hi):
            raise ValueError(
                f"band '{self.name}' needs finite edges 0 <= lo < hi h/Mpc, got "
                f"({self.lo}, {self.hi}]"
            )


def default_bands(box: float, grid: int) -> tuple[Band, ...]:
    """The large / intermediate / small / rest bands of a ``grid^3`` cube of side ``box``."""
    if not (np.isfinite(box) and box > 0) or int(grid) != grid or grid < 2:
        raise ValueError(f"need box > 0 Mpc/h and an integer grid >= 2, got {box}, {grid}")
    nyquist = (int(grid) // 2) * 2.0 * np.pi / box
    half = nyquist / 2.0
    large = min(LARGE_K, half)
    mid = float(np.sqrt(large * half))
    edges = (("large", 0.0, large), ("intermediate", large, mid), ("small", mid, half))
    edges += (("rest", half, nyquist),)
    return tuple(Band(name, lo, hi) for name, lo, hi in edges if lo < hi)


def parse_bands(
    spec: Mapping[str, Sequence[float]] | None, box: float, grid: int
) -> tuple[Band, ...]:
    """Bands from a report option ``{name: [lo, hi]}`` (h/Mpc); ``None``: :func:`default_bands`."""
    if spec is None:
        return default_bands(box, grid)
    bands = []
    for name, edges in spec.items():
        if len(edges) != 2:
            raise ValueError(f"bands.{name} must be [lo, hi] in h/Mpc, got {list(edges)}")
        bands.append(Band(str(name), float(edges[0]), float(edges[1])))
    if not bands:
        raise ValueError("bands is empty: give {name: [lo, hi]} entries or null for the defaults")
    return tuple(bands)


def band_edges(bands: Sequence[Band]) -> list[float]:
    """The bands' edges above k = 0, sorted (h/Mpc): where a plot marks them."""
    return sorted({b.hi for b in bands} | {b.lo for b in bands if b.lo > 0})


def band_scores(
    k: np.ndarray, pk_ratio: np.ndarray, r: np.ndarray, bands: Sequence[Band]
) -> dict[str, float]:
    """Per band: mean r(k), mean |P/P_true - 1| and mean 1 - r(k)^2 over the band's k bins.

    ``k`` [h/Mpc] are the bins' mean wavenumbers, ``pk_ratio`` = P_field / P_true and ``r`` the
    cross-correlation with the truth per bin. Keys ``<metric>_<band>``; empty bands are left out.
    """
    k, pk_ratio, r = (np.asarray(x, dtype=np.float64) for x in (k, pk_ratio, r))
    if not k.shape == pk_ratio.shape == r.shape or k.ndim != 1:
        raise ValueError(
            f"k, pk_ratio and r must be 1-D arrays of one length, got {k.shape}, "
            f"{pk_ratio.shape}, {r.shape}"
        )
    out = {}
    for band in bands:
        sel = (k > band.lo) & (k <= band.hi)
        if not sel.any():
            continue
        out[f"rk_mean_{band.name}"] = float(np.mean(r[sel]))
        out[f"pk_ratio_abs_err_{band.name}"] = float(np.mean(np.abs(pk_ratio[sel] - 1.0)))
        out[f"decorrelation_{band.name}"] = float(np.mean(1.0 - r[sel] ** 2))
    return out


def decorrelation_ratios(
    scores: Mapping[str, Mapping[str, float]], bands: Sequence[Band], reference: str
) -> dict[str, dict[str, float]]:
    """``decorrelation_ratio_<band>`` of every field: its 1 - r^2 over ``reference``'s.

    ``scores`` maps field names to :func:`band_scores` results and must hold ``reference``
    (e.g. ``oracle_mean``: a ratio of 1 is the physical limit, 2 loses twice the information).
    Bands where the reference decorrelation is not > 0 get no ratio.
    """
    if reference not in scores:
        raise KeyError(f"reference field '{reference}' has no band scores (got {list(scores)})")
    ref = scores[reference]
    out: dict[str, dict[str, float]] = {}
    for name, values in scores.items():
        out[name] = {}
        for band in bands:
            key = f"decorrelation_{band.name}"
            if key in values and ref.get(key, 0.0) > 0:
                out[name][f"{RATIO_METRIC}_{band.name}"] = values[key] / ref[key]
    return out
