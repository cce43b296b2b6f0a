"""What an evaluation report measured (:func:`dm2gal.eval.report.measure_draws`), as data:
per field the P(k), r(k), B(k1, k2, theta) and voxel-PDF curves and the scalar scores, and
for a random field the curves and scores of each of its draws. Units: k [h/Mpc],
P [(Mpc/h)^3], B [(Mpc/h)^6], masses Msun/h.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dm2gal.stats.bands import Band
from dm2gal.stats.base import Bispectrum


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
