"""Spatially coherent draws: a Gaussian copula over a probabilistic network's per-voxel laws.

A copula draw takes, per voxel, ``u = Phi(z)`` and the mass ``F^{-1}(u)`` of the voxel's law
(:func:`dm2gal.models.mass_law.mass_quantile`), where ``z`` is a unit-variance Gaussian field

    z = sqrt(1 - c) w_0 + sqrt(c) (g x g x g) * w_1

with ``w_0``, ``w_1`` white normal fields fixed per ``(seed, voxel)`` (two channels of
:func:`dm2gal.infer.noise.voxel_noise` through ``Phi^{-1}``), ``g`` a truncated Gaussian of
``width`` voxels over ``2 radius + 1`` taps per axis (unit L2 norm), and ``c`` the coherent
fraction of the variance. ``z``'s correlation at lag ``d`` along an axis is
``c A(d)``, ``A(d) = sum_i g_i g_{i+d}`` (exact on the grid, truncation included); the kernel
is fitted to the truth (:mod:`dm2gal.infer.copula_fit`). A tile computes its white noise on
the tile widened by ``radius`` voxels and smooths it with shifted sums (the same additions in
the same order for every voxel): a draw is the same, bit for bit, whatever the tiling.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dm2gal.errors import ConfigError, MissingFileError, integer_option
from dm2gal.infer.noise import voxel_noise
from dm2gal.io.store import atomic_write_text

#: where a run's evaluation (and an exported model) keeps its fitted copula
COPULA_FILE = "copula.json"
#: white-noise channels a copula draw uses (w_0, w_1)
COPULA_CHANNELS = 2
#: the smallest uniform fed to Phi^{-1} (torch.rand may return 0)
UNIFORM_MIN = 2.0**-54


@dataclass(frozen=True)
class CopulaKernel:
    """The Gaussian copula's smoothing: ``coherent`` fraction ``c`` of the latent variance,
    smoothed by a Gaussian of ``width`` voxels truncated at ``radius`` voxels per side;
    ``fit``: how it was fitted (lags, measured latent correlations, pairs; for the record)."""

    coherent: float
    width: float
    radius: int
    fit: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.coherent <= 1.0:
            raise ConfigError(f"copula: coherent must be in [0, 1], got {self.coherent!r}")
        if not self.width > 0:
            raise ConfigError(f"copula: width must be > 0 voxels, got {self.width!r}")
        object.__setattr__(self, "radius", integer_option(self.radius, "copula.radius", 0))

    def taps(self) -> np.ndarray:
        """``g_i``, ``i = -radius .. radius``, of unit L2 norm (float64)."""
        i = np.arange(-self.radius, self.radius + 1, dtype=np.float64)
        g = np.exp(-0.5 * (i / self.width) ** 2)
        return g / math.sqrt(float((g**2).sum()))

    def correlation(self, lags: Sequence[int] | np.ndarray) -> np.ndarray:
        """``z``'s correlation at integer ``lags`` (voxels) along one axis."""
        return self.coherent * axis_autocorrelation(self.taps(), lags)

    def normal_noise(
        self, seed: int, start: Sequence[int], shape: Sequence[int], grid: int
    ) -> torch.Tensor:
        """``z`` (float64, ``shape``) on the box ``[start, start + shape)`` of a periodic
        ``grid^3`` box, for draw ``seed``."""
        return self.smooth(white_normal(seed, start, shape, grid, self.radius))

    def smooth(self, white: torch.Tensor) -> torch.Tensor:
        """``z`` from the white fields ``(2, n + 2 radius, ...)`` of :func:`white_normal`, on
        their central ``n^3`` voxels."""
        r = self.radius
        smooth = white[1]
        taps = torch.from_numpy(self.taps())
        for axis in range(3):
            smooth = shifted_sum(smooth, taps, axis)
        centre = white[0][tuple(slice(r, n - r) for n in white.shape[1:])]
        return math.sqrt(1.0 - self.coherent) * centre + math.sqrt(self.coherent) * smooth

    def uniform_noise(
        self, seed: int, start: Sequence[int], shape: Sequence[int], grid: int
    ) -> torch.Tensor:
        """``u = Phi(z)`` (float64, ``(1, *shape)``): what a copula draw's quantiles take."""
        return torch.special.ndtr(self.normal_noise(seed, start, shape, grid)).unsqueeze(0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> CopulaKernel:
        """A kernel from :meth:`to_dict`'s dictionary; ``where`` names its file in errors."""
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(f"{where}: not a copula kernel ({err})") from err

    def save(self, path: str | Path) -> None:
        """Write the kernel as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> CopulaKernel:
        """Read a kernel written by :meth:`save`."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MissingFileError(f"{path}: not a readable copula kernel ({err})") from err
        return cls.from_dict(values, str(path))


def white_normal(
    seed: int, start: Sequence[int], shape: Sequence[int], grid: int, radius: int
) -> torch.Tensor:
    """White normal fields ``w_0, w_1`` (float64, ``(2, *(shape + 2 radius))``) of draw ``seed``
    on the box ``[start, start + shape)`` widened by ``radius`` voxels on every side."""
    wide = voxel_noise(
        seed, [s - radius for s in start], [n + 2 * radius for n in shape], grid, COPULA_CHANNELS
    )
    return torch.special.ndtri(wide.clamp(min=UNIFORM_MIN))


def axis_autocorrelation(taps: np.ndarray, lags: Sequence[int] | np.ndarray) -> np.ndarray:
    """``A(d) = sum_i g_i g_{i+d}`` of unit-norm ``taps`` at each lag (0 beyond the support)."""
    n = len(taps)
    return np.array(
        [float(taps[: n - abs(d)] @ taps[abs(d) :]) if abs(d) < n else 0.0 for d in lags]
    )


def shifted_sum(x: torch.Tensor, taps: torch.Tensor, axis: int) -> torch.Tensor:
    """The valid correlation of ``x`` with ``taps`` along ``axis`` (``len(taps) - 1`` fewer
    voxels), as a sum of shifted copies: each voxel's terms are multiplied and added in the same
    order wherever it lies (a convolution routine's blocking could change the order, and the
    last bits, with the tile)."""
    n = x.shape[axis] - len(taps) + 1
    out = taps[0] * x.narrow(axis, 0, n)
    for i in range(1, len(taps)):
        out = out + taps[i] * x.narrow(axis, i, n)
    return out
