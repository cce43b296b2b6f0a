"""The whole law of one voxel's stellar mass under an :class:`OccupancyMixture`, and its
quantile: what a copula draw (:mod:`dm2gal.infer.copula`) takes its masses from.

A voxel's drawn mass ``M = clip(10^y - 1, 0, M_max)`` (Msun/h; :mod:`dm2gal.models.mixture`)
has an atom at 0 of probability ``F_0 = 1 - p + p C(0)``, a continuous part
``F(M) = 1 - p + p C(log10(1 + M))`` for ``0 < M < M_max`` and an atom at ``M_max`` of
probability ``p (1 - C(b))``, with ``b = log10(1 + M_max)`` and ``C(y) = sum_k w_k C_k(y)`` the
mixture's CDF of ``y = log10(1 + M)``: ``C_k = Phi((y - m_k) / s_k)`` for normal components,
``1 - exp(-exp((y - m_k) / s_k))`` for minimum-Gumbel ones. A draw ``M = F^{-1}(u)`` with
``u`` uniform has exactly the law that :meth:`OccupancyMixture.from_noise` draws from.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dm2gal.models.families import Family
from dm2gal.models.mixture import OccupancyMixture

#: bisection steps of the quantile: the bracket (at most ~20 dex) shrinks below 1e-13 dex
QUANTILE_STEPS = 48
#: component scales above the location where the quantile's bracket ends (both laws put
#: less than 1e-15 of their probability above it)
UPPER_SCALES = 10.0


def _mixture_cdf(family: Family, y: Tensor, m: Tensor, s: Tensor, w: Tensor) -> Tensor:
    """``C(y)`` of ``(N,)`` log masses under ``(N, K)`` locations, scales and weights."""
    return (w * family.cdf((y.unsqueeze(-1) - m) / s)).sum(dim=-1)


def _flat_params(dist: OccupancyMixture, where: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Locations and scales (dex of ``1 + M``) and weights ``(N, K)`` of the voxels ``where``
    (a ``(B, ...)`` mask), float64."""
    m, s = (x.movedim(1, -1)[where] for x in dist._log10_params())
    return m, s, dist.log_weights.double().exp().movedim(1, -1)[where]


def _upper_log_mass(dist: OccupancyMixture) -> float:
    """``b = log10(1 + M_max)`` (inf without a clip)."""
    top = dist.target_max
    return math.log10(1.0 + top) if math.isfinite(top) else math.inf


def mass_quantile(dist: OccupancyMixture, u: Tensor, steps: int = QUANTILE_STEPS) -> Tensor:
    """``F^{-1}(u)`` per voxel (Msun/h, float64) for uniforms ``u`` ``(B, 1, ...)`` in
    ``(0, 1)``: 0 where ``u <= F_0``, ``M_max`` in the upper atom, else the log mass where
    ``C(y) = (u - 1 + p) / p``, found by ``steps`` bisections (elementwise arithmetic: a
    voxel's quantile does not depend on which other voxels are computed with it; the
    mixture's CDF has no closed-form inverse)."""
    if u.shape[1] != 1 or u.shape[2:] != dist.logit.shape[2:]:
        raise ValueError(
            f"mass_quantile: u must have shape (B, 1, {', '.join(map(str, dist.logit.shape[2:]))})"
            f", got {tuple(u.shape)}"
        )
    p = dist.resolved_occupancy()
    u = u.double()
    mass = torch.zeros_like(u)
    occupied = (u > 1.0 - p)[:, 0]
    if not occupied.any():
        return mass
    m, s, w = _flat_params(dist, occupied)
    level = ((u - 1.0 + p) / p)[:, 0][occupied]
    b = _upper_log_mass(dist)
    family = dist.law
    zero = torch.zeros_like(level)
    lo = zero
    hi = (m + UPPER_SCALES * s).amax(dim=-1).clamp(min=0.0, max=b)
    inside = level > _mixture_cdf(family, zero, m, s, w)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        low = _mixture_cdf(family, mid, m, s, w) < level
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    y = torch.where(inside, 0.5 * (lo + hi), zero)
    if math.isfinite(b):
        y = torch.where(level >= _mixture_cdf(family, torch.full_like(y, b), m, s, w), b, y)
    values = torch.expm1(math.log(10.0) * y).clamp(min=0.0, max=dist.target_max)
    flat = mass[:, 0]
    flat[occupied] = values
    return mass
