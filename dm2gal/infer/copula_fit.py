"""Fit a draw copula (:mod:`dm2gal.infer.copula`) to the truth on a held-out region.

The kernel is chosen so that copula draws of the model's per-voxel laws give the truth's
residual correlation, ``corr(M - E[M])`` between voxels 1..radius apart along the axes, on the
region: for each width of :data:`WIDTHS` the coherent fraction is found by bisection (the lag-1
correlation grows with it), and the width whose draws match the longer lags best is kept.
The draws of every candidate use the same white noise (seeds :data:`FIT_SEEDS`), so the
comparison between candidates is not blurred by their sampling noise.

Why not the correlation of the truth's normal scores ``Phi^{-1}(F(M))`` (censored where empty,
by pairwise likelihood): on the mock it measures 0.79 at lag 1, and a Gaussian copula with it
gives draws whose residual neighbour correlation (0.30-0.32) and residual power (2-4x) overshoot
the truth's (0.18): a galaxy's cloud-in-cell voxels are occupied together while their shares
of its mass are not, which one latent correlation cannot hold both of
(docs/results/2026-12-06-coherent-draws.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import integer_option
from dm2gal.infer.copula import CopulaKernel, white_normal
from dm2gal.models.mass_law import mass_quantile
from dm2gal.models.mixture import OccupancyMixture

#: kernel widths (voxels) the fit tries
WIDTHS = (0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0)
#: bisection steps of the coherent fraction per width (resolution 2^-7)
COHERENT_STEPS = 7
#: the draws the fit compares (white noise shared by every candidate kernel)
FIT_SEEDS = (0, 1)
#: bisection steps of the fit's quantiles (log mass to ~1e-5 dex: enough for a correlation)
FIT_QUANTILE_STEPS = 20


def residual_correlation(
    field: np.ndarray | torch.Tensor,
    mean: np.ndarray | torch.Tensor,
    lags: Sequence[int],
    periodic: bool = False,
) -> np.ndarray:
    """The correlation of the residual ``field - mean`` between voxels ``lag`` apart along the
    three axes, per lag (pairs inside the cube; with ``periodic`` also across its faces)."""
    r = np.asarray(field, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    r = r - r.mean()
    variance = float((r**2).mean())
    out = []
    for lag in lags:
        if periodic:
            pairs = [r * np.roll(r, lag, axis=axis) for axis in range(3)]
        else:
            n = r.shape
            pairs = [
                np.take(r, np.arange(n[a] - lag), axis=a) * np.take(r, np.arange(lag, n[a]), axis=a)
                for a in range(3)
            ]
        out.append(float(np.mean([p.mean() for p in pairs])) / variance)
    return np.array(out)


def neighbour_correlation(
    field: np.ndarray | torch.Tensor, mean: np.ndarray | torch.Tensor
) -> float:
    """The residual correlation of neighbouring voxels of a periodic box: 0 for independent
    draws; what a copula draw should share with the truth."""
    return float(residual_correlation(field, mean, [1], periodic=True)[0])


def fit_copula(
    dist: OccupancyMixture,
    truth: torch.Tensor,
    radius: int,
    start: Sequence[int] = (0, 0, 0),
    grid: int | None = None,
) -> CopulaKernel:
    """The copula kernel of ``radius`` voxels whose draws under the per-voxel laws ``dist``
    give the residual correlation of ``truth`` ``(1, 1, n, n, n)`` (Msun/h) at lags
    ``1..radius``; the cube starts at voxel ``start`` of a periodic ``grid^3`` box (default: it
    is the whole box). The measured and fitted correlations are kept in the kernel's ``fit``."""
    radius = integer_option(radius, "copula radius", 1)
    shape = tuple(truth.shape[2:])
    grid = shape[0] if grid is None else grid
    lags = list(range(1, radius + 1))
    mean = dist.mean()[0, 0].numpy()
    target = residual_correlation(truth[0, 0], mean, lags)
    whites = [white_normal(seed, start, shape, grid, radius) for seed in FIT_SEEDS]

    def draws(kernel: CopulaKernel) -> np.ndarray:
        """The candidate's residual correlation, averaged over the fit's draws."""
        found = [
            residual_correlation(
                mass_quantile(
                    dist, torch.special.ndtr(kernel.smooth(w))[None, None], FIT_QUANTILE_STEPS
                )[0, 0],
                mean,
                lags,
            )
            for w in whites
        ]
        return np.mean(found, axis=0)

    best: tuple[float, CopulaKernel, np.ndarray] | None = None
    for width in WIDTHS:
        lo, hi = 0.0, 1.0
        for _ in range(COHERENT_STEPS):
            mid = 0.5 * (lo + hi)
            if draws(CopulaKernel(mid, width, radius))[0] < target[0]:
                lo = mid
            else:
                hi = mid
        kernel = CopulaKernel(0.5 * (lo + hi), width, radius)
        got = draws(kernel)
        misfit = float(((got - target) ** 2).sum())
        if best is None or misfit < best[0]:
            best = (misfit, kernel, got)
    _, kernel, got = best
    fit = {
        "lags": lags,
        "truth_residual_correlation": target.tolist(),
        "draw_residual_correlation": got.tolist(),
        "latent_correlation": kernel.correlation(lags).tolist(),
        "voxels": int(truth.numel()),
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
    kernel = fit_copula(dist, truth, radius, cube.start, cube.grid)
    fit = {**kernel.fit, "region": {"start": list(cube.start), "size": list(cube.size)}}
    return CopulaKernel(kernel.coherent, kernel.width, radius, fit)
