"""The component laws of log mass a probabilistic head can use, one table per family.

A component has a location ``m`` and a scale ``s``; its value ``y`` (normalised or dex of
``1 + M``) is ``m + s z`` with ``z`` from the family's standard law. Each :class:`Family` holds
that law's log density, CDF and quantile in ``z``, the closed-form mean in mass of its clipped
draws (:mod:`dm2gal.models.mixture`'s docstring gives both formulas) and the location and scale
that give a wanted mean and standard deviation (how a head starts). A family is chosen by name
once (:func:`family_law`); nothing else branches on the name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dm2gal.errors import ConfigError

LN10 = math.log(10.0)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: z = (y - loc) / scale above which the minimum-Gumbel likelihood's exp(z) grows linearly
GUMBEL_CAP = 20.0
#: Euler's constant: a standard minimum-Gumbel law has mean -EULER_GAMMA
EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class Family:
    """One family of component laws.

    Attributes:
        name: its config name (``model.family``, ``loss.family``).
        log_density: ``log f(z)`` of the standard law.
        cdf: ``P(Z <= z)``.
        quantile: ``z`` with ``P(Z <= z) = u`` for ``u`` in ``(0, 1)``.
        clipped_means: ``E_k`` in Msun/h of ``clip(10^y - 1, 0, M_max)`` per component, from
            locations ``m``, scales ``s`` (dex of ``1 + M``), ``b = log10(1 + M_max)`` and
            ``M_max`` (``inf``: no clip), float64.
        from_moments: ``(location, scale)`` of the law of mean ``mean`` and standard deviation
            ``std``.
    """

    name: str
    log_density: Callable[[Tensor], Tensor]
    cdf: Callable[[Tensor], Tensor]
    quantile: Callable[[Tensor], Tensor]
    clipped_means: Callable[[Tensor, Tensor, Tensor, float], Tensor]
    from_moments: Callable[[float, float], tuple[float, float]]


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate on both sides of ``-ln 2``."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_normal_interval(lo: Tensor, hi: Tensor) -> Tensor:
    """``log(Phi(hi) - Phi(lo))`` for ``lo <= hi`` (either may be infinite), computed in the tail
    where both values are small (``Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)``)."""
    flip = lo > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    return log_b + _log1mexp((torch.special.log_ndtr(a) - log_b).clamp(max=0.0))


def _capped_exp(z: Tensor) -> Tensor:
    """``exp(z)`` up to ``z = GUMBEL_CAP``, continued linearly above: the minimum-Gumbel
    likelihood's ``exp(z)`` of a target far above its mode overflows (and its gradient with it)
    where the law puts probability ``exp(-e^20) ~ 0``."""
    capped = z.clamp(max=GUMBEL_CAP)
    return torch.exp(capped) * (1.0 + (z - capped))


def _normal_means(m: Tensor, s: Tensor, b: Tensor, top: float) -> Tensor:
    """``E_k`` of normal components (:mod:`dm2gal.models.mixture`)."""
    shifted = m + LN10 * s**2
    log_power = (
        LN10 * m + 0.5 * (LN10 * s) ** 2 + log_normal_interval(-shifted / s, (b - shifted) / s)
    )
    inside = torch.exp(log_normal_interval(-m / s, (b - m) / s))
    means = torch.exp(log_power) - inside
    if math.isfinite(top):
        means = means + top * torch.special.ndtr((m - b) / s)
    return means


def _gumbel_means(m: Tensor, s: Tensor, b: Tensor, top: float) -> Tensor:
    """``E_k`` of minimum-Gumbel components (:mod:`dm2gal.models.mixture`). ``Gamma(1 + a)
    [Q(1 + a, e_0) - Q(1 + a, e_1)]`` is taken as a difference of lower regularised functions
    where ``e_1 < 1 + a`` (both small there), and multiplied in log space: a voxel's component
    may be very broad (far from every halo), where ``Gamma(1 + a)`` alone overflows. Each
    element evaluates only its own form (the incomplete gamma functions are slow)."""
    a = 1.0 + LN10 * s
    e0, e1 = torch.exp(-m / s), torch.exp((b - m) / s)
    low = e1 < a
    power = torch.empty_like(a)
    power[low] = torch.special.gammainc(a[low], e1[low]) - torch.special.gammainc(a[low], e0[low])
    high = ~low
    power[high] = torch.special.gammaincc(a[high], e0[high]) - torch.special.gammaincc(
        a[high], e1[high]
    )
    power = power.clamp(min=0.0)
    means = torch.exp(LN10 * m + torch.lgamma(a) + torch.log(power))
    means = means - (torch.exp(-e0) - torch.exp(-e1))
    if math.isfinite(top):
        means = means + top * torch.exp(-e1)
    return means


def _normal_log_density(z: Tensor) -> Tensor:
    return -0.5 * z**2 - LOG_SQRT_2PI


def _normal_from_moments(mean: float, std: float) -> tuple[float, float]:
    return mean, std


def _gumbel_log_density(z: Tensor) -> Tensor:
    return z - _capped_exp(z)


def _gumbel_cdf(z: Tensor) -> Tensor:
    return -torch.expm1(-torch.exp(z))


def _gumbel_quantile(u: Tensor) -> Tensor:
    return torch.log(-torch.log1p(-u))


def _gumbel_from_moments(mean: float, std: float) -> tuple[float, float]:
    """std = scale * pi / sqrt(6), mean = loc - gamma * scale."""
    scale = std * math.sqrt(6.0) / math.pi
    return mean + EULER_GAMMA * scale, scale


# named functions, not lambdas: a network holding its family stays picklable
NORMAL = Family(
    "normal",
    _normal_log_density,
    torch.special.ndtr,
    torch.special.ndtri,
    _normal_means,
    _normal_from_moments,
)
GUMBEL = Family(
    "gumbel",
    _gumbel_log_density,
    _gumbel_cdf,
    _gumbel_quantile,
    _gumbel_means,
    _gumbel_from_moments,
)
#: the families by name
LAWS = {family.name: family for family in (NORMAL, GUMBEL)}
#: their names, the values of model.family / loss.family
FAMILIES = tuple(LAWS)


def check_family(value: str, key: str) -> str:
    """``value`` when it is one of :data:`FAMILIES`, else a :class:`ConfigError` naming the
    config ``key`` (``model.family``, ``loss.family``)."""
    if value not in LAWS:
        raise ConfigError(f"{key}: expected one of {FAMILIES}, got {value!r}")
    return value


def family_law(value: str, key: str) -> Family:
    """The :class:`Family` named ``value`` (checked as :func:`check_family`)."""
    return LAWS[check_family(value, key)]
