"""Fit a draw copula (:mod:`dm2gal.infer.copula`) to the truth on a held-out region.

The truth's masses, seen through the model's per-voxel laws, give normal scores
``z = Phi^{-1}(F(M))`` where ``M`` lies in the continuous part, and only the bound
``z <= Phi^{-1}(F_0)`` where the voxel is empty (:func:`dm2gal.models.mass_law.
mass_cdf_interval`; a truth in the upper atom counts as the middle of its interval). Under a
Gaussian copula, neighbours at lag ``d`` are bivariate normal with correlation ``rho(d)``;
``rho(d)`` is estimated by maximising the pairwise likelihood of all pairs at that lag along
the three axes (censored pairs through the bivariate normal CDF), not by correlating
randomised PITs: where most voxels are empty those are white noise and hide the correlation.
The kernel (coherent fraction, width) is then the least-squares fit of its exact lattice
correlation to ``rho(1..radius)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import optimize, special

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import integer_option
from dm2gal.infer.copula import CopulaKernel, axis_autocorrelation
from dm2gal.models.mass_law import mass_cdf_interval
from dm2gal.models.mixture import OccupancyMixture

#: the latent correlations searched (the bivariate CDF's quadrature is accurate inside)
RHO_BOUND = 0.95
#: Gauss-Legendre nodes of the bivariate normal CDF's integral over the correlation
CDF_NODES = 24
#: censoring bounds above which a voxel's bound carries no information (Phi(8) = 1 - 6e-16)
UNINFORMATIVE = 8.0
#: kernel widths (voxels) searched by the least-squares fit
WIDTHS = np.geomspace(0.2, 16.0, 800)
#: CDF levels kept off 0 and 1 before Phi^{-1}
LEVEL_EPS = 1e-15


def bivariate_normal_cdf(h: np.ndarray, k: np.ndarray, rho: float) -> np.ndarray:
    """``P(X <= h, Y <= k)`` of standard normals with correlation ``rho`` (``|rho| <=
    RHO_BOUND``), elementwise: ``Phi(h) Phi(k) + int_0^rho phi_2(h, k; r) dr`` by Gauss-Legendre
    quadrature (the integrand is smooth for ``|r| < 1``). scipy's multivariate normal CDF
    integrates by randomised quasi-Monte Carlo (noisy, slow per point), unusable inside an
    optimiser over millions of pairs."""
    x, weights = np.polynomial.legendre.leggauss(CDF_NODES)
    r = 0.5 * rho * (x + 1.0)  # nodes on [0, rho]
    h, k = h[..., None], k[..., None]
    one = 1.0 - r**2
    density = np.exp(-(h**2 - 2.0 * r * h * k + k**2) / (2.0 * one)) / np.sqrt(one)
    integral = 0.5 * rho * (density * weights).sum(axis=-1) / (2.0 * np.pi)
    return special.ndtr(h[..., 0]) * special.ndtr(k[..., 0]) + integral


def normal_scores(dist: OccupancyMixture, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel of ``truth`` ``(1, 1, ...)`` (Msun/h): the normal score where it is one
    value (else NaN) and the upper bound of the empty voxels' scores (else NaN)."""
    lo, hi = (x[0, 0].numpy() for x in mass_cdf_interval(dist, truth))
    empty = lo <= 0.0
    middle = 0.5 * (lo + hi)
    score = special.ndtri(np.clip(np.where(empty, np.nan, middle), LEVEL_EPS, 1 - LEVEL_EPS))
    bound = special.ndtri(np.clip(np.where(empty, hi, np.nan), LEVEL_EPS, 1.0))
    return score, bound


def _pairs(field: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The values of all voxel pairs ``lag`` apart along each of the three axes."""
    a, b = [], []
    for axis in range(3):
        n = field.shape[axis]
        a.append(np.take(field, np.arange(n - lag), axis=axis).ravel())
        b.append(np.take(field, np.arange(lag, n), axis=axis).ravel())
    return np.concatenate(a), np.concatenate(b)


def lag_correlation(score: np.ndarray, bound: np.ndarray, lag: int) -> tuple[float, int]:
    """The latent correlation at ``lag`` voxels (pairwise maximum likelihood) and the number
    of informative pairs it rests on."""
    sa, sb = _pairs(score, lag)
    ca, cb = _pairs(bound, lag)
    both = np.isfinite(sa) & np.isfinite(sb)
    x, y = sa[both], sb[both]
    one_a = np.isfinite(sa) & (cb < UNINFORMATIVE)
    one_b = np.isfinite(sb) & (ca < UNINFORMATIVE)
    z = np.concatenate([sa[one_a], sb[one_b]])
    c = np.concatenate([cb[one_a], ca[one_b]])
    cens = (ca < UNINFORMATIVE) & (cb < UNINFORMATIVE)
    h, k = ca[cens], cb[cens]

    def negative_log_likelihood(rho: float) -> float:
        one = 1.0 - rho**2
        ll = (-0.5 * np.log(one) - (rho**2 * (x**2 + y**2) - 2 * rho * x * y) / (2 * one)).sum()
        ll += special.log_ndtr((c - rho * z) / np.sqrt(one)).sum()
        ll += np.log(np.maximum(bivariate_normal_cdf(h, k, rho), 1e-300)).sum()
        return -float(ll)

    count = int(x.size + z.size + h.size)
    if count == 0:
        return 0.0, 0
    found = optimize.minimize_scalar(
        negative_log_likelihood, bounds=(-RHO_BOUND, RHO_BOUND), method="bounded",
        options={"xatol": 1e-5},
    )  # fmt: skip
    return float(found.x), count


def fit_kernel(lags: Sequence[int], rho: Sequence[float], radius: int) -> CopulaKernel:
    """The kernel of ``radius`` whose lattice correlation fits ``rho`` at ``lags`` best (least
    squares; for each width the coherent fraction is the clipped linear solution)."""
    rho = np.asarray(rho, dtype=np.float64)
    best = (np.inf, 0.0, float(WIDTHS[0]))
    for width in WIDTHS:
        shape = axis_autocorrelation(CopulaKernel(1.0, width, radius).taps(), lags)
        norm = float(shape @ shape)
        coherent = float(np.clip(shape @ rho / norm, 0.0, 1.0)) if norm > 0 else 0.0
        misfit = float(((rho - coherent * shape) ** 2).sum())
        if misfit < best[0]:
            best = (misfit, coherent, float(width))
    return CopulaKernel(best[1], best[2], radius)


def fit_copula(dist: OccupancyMixture, truth: torch.Tensor, radius: int) -> CopulaKernel:
    """The copula kernel of ``radius`` voxels fitted to ``truth`` ``(1, 1, n, n, n)`` (Msun/h)
    under the per-voxel laws ``dist``, with the measured correlations in its ``fit``."""
    radius = integer_option(radius, "copula radius", 1)
    score, bound = normal_scores(dist, truth)
    lags = list(range(1, radius + 1))
    measured = [lag_correlation(score, bound, lag) for lag in lags]
    kernel = fit_kernel(lags, [rho for rho, _ in measured], radius)
    fit = {
        "lags": lags,
        "latent_correlation": [rho for rho, _ in measured],
        "pairs": [count for _, count in measured],
        "kernel_correlation": kernel.correlation(lags).tolist(),
        "voxels": int(score.size),
    }
    return CopulaKernel(kernel.coherent, kernel.width, radius, fit)


@torch.no_grad()
def region_law(
    net: torch.nn.Module, transform: FieldTransform, inputs: Sequence[np.ndarray], region: Region
) -> OccupancyMixture:
    """A probabilistic network's per-voxel laws on ``region`` (a cube) from one forward pass on
    the CPU, anchored at the region's start as a prediction's tiles are."""
    side = region.size[0]
    n = next(s for s in range(side, side + 4 * net.period + 2) if net.valid_output(s))
    c = net.context
    start = [s - c for s in region.start]
    raw = np.stack([read_crop(field, start, n + 2 * c) for field in inputs])
    x = transform.forward_input(torch.from_numpy(raw))[None]
    out = net.cpu().eval()(x)[..., :side, :side, :side]
    return net.distribution(out)


def fit_region_copula(
    net: torch.nn.Module,
    transform: FieldTransform,
    inputs: Sequence[np.ndarray],
    target: np.ndarray,
    region: Region,
    radius: int,
    max_side: int = 64,
) -> CopulaKernel:
    """Fit the copula of ``net`` on (at most ``max_side^3`` voxels at the start of) the cube
    ``region`` of the ``inputs`` fields and the true ``target`` field (Msun/h per voxel)."""
    side = min(region.size[0], integer_option(max_side, "copula max_side", 2))
    cube = Region(region.start, (side,) * 3, region.grid)
    dist = region_law(net, transform, inputs, cube)
    truth = torch.from_numpy(read_crop(target, cube.start, side))[None, None]
    kernel = fit_copula(dist, truth, radius)
    fit = {**kernel.fit, "region": {"start": list(cube.start), "size": list(cube.size)}}
    return CopulaKernel(kernel.coherent, kernel.width, radius, fit)


def neighbour_correlation(
    field: np.ndarray | torch.Tensor, mean: np.ndarray | torch.Tensor
) -> float:
    """The correlation of the residual ``field - mean`` between neighbouring voxels (lag 1,
    the three axes, periodic): 0 for independent draws; what a copula draw should share with
    the truth."""
    r = np.asarray(field, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    r = r - r.mean()
    lagged = sum(float((r * np.roll(r, 1, axis=axis)).sum()) for axis in range(r.ndim))
    return lagged / (r.ndim * float((r**2).sum()))
