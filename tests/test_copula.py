"""Coherent draws: the Gaussian copula's noise, the per-voxel quantile, and the fit that
recovers a known correlated residual."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import mock_cache_dir
from scipy import ndimage, special, stats

from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.eval.evaluation import EvaluationSettings, evaluate_test_region
from dm2gal.eval.report import ReportOptions
from dm2gal.infer.copula import COPULA_FILE, CopulaKernel, axis_autocorrelation
from dm2gal.infer.copula_fit import fit_copula, neighbour_correlation, residual_correlation
from dm2gal.infer.noise import voxel_noise
from dm2gal.infer.predict import PredictOptions, predict_fields, predict_region
from dm2gal.io.store import FieldStore
from dm2gal.models import ProbabilisticNet
from dm2gal.models.mass_law import mass_quantile
from dm2gal.models.mixture import OccupancyMixture
from dm2gal.sim import MockUniverse

GRID = 32
# the known latent field: a coherent fraction COHERENT of the variance smoothed by scipy's
# periodic Gaussian filter of SIGMA voxels (another truncation than the copula kernel's)
COHERENT, SIGMA = 0.6, 1.2


def synthetic_law(family: str = "gumbel") -> OccupancyMixture:
    """A known per-voxel law on a periodic 32^3 box: occupancy 0.05-0.95 varying along x and
    y, one component in log10(1 + M) at 8 +- 0.5 dex along z, scale 0.4 dex."""
    x = np.arange(GRID) * 2 * np.pi / GRID
    ax, ay, az = np.meshgrid(x, x, x, indexing="ij")
    logit = 2.0 * np.sin(ax) + np.cos(ay)
    raw_scale = np.full_like(logit, math.log(math.expm1(0.4)))  # softplus^-1(0.4)
    output = np.stack([logit, np.zeros_like(logit), 8.0 + 0.5 * np.sin(az), raw_scale])
    return OccupancyMixture(torch.tensor(output, dtype=torch.float32)[None], family=family)


def smoothed(field: np.ndarray) -> np.ndarray:
    """``field`` through the periodic Gaussian filter, scaled so that white noise comes out
    with unit variance."""
    delta = np.zeros((GRID,) * 3)
    delta[0, 0, 0] = 1.0
    norm = np.sqrt((ndimage.gaussian_filter(delta, SIGMA, mode="wrap") ** 2).sum())
    return ndimage.gaussian_filter(field, SIGMA, mode="wrap") / norm


def known_correlation(lags: list[int]) -> np.ndarray:
    """The known latent field's exact correlation at ``lags`` along an axis: the coherent
    fraction times the autocorrelation of the filter's impulse response."""
    delta = np.zeros((GRID,) * 3)
    delta[0, 0, 0] = 1.0
    h = smoothed(delta)
    return np.array([COHERENT * float((h * np.roll(h, d, axis=0)).sum()) for d in lags])


def known_truth(dist: OccupancyMixture, seed: int) -> torch.Tensor:
    """A truth ``(1, 1, 32, 32, 32)`` (Msun/h) whose residual about ``dist``'s mean is
    correlated as the known latent field: its quantiles under ``dist``."""
    white, coherent = np.random.default_rng(seed).standard_normal((2, GRID, GRID, GRID))
    z = math.sqrt(1 - COHERENT) * white + math.sqrt(COHERENT) * smoothed(coherent)
    return mass_quantile(dist, torch.from_numpy(special.ndtr(z))[None, None])


def test_copula_noise_is_a_function_of_seed_and_voxel() -> None:
    """A sub-box's noise (wrapping, negative starts) is the whole box's, bit for bit; the
    latent field has unit variance and the kernel's correlation at lags 1 and 2."""
    kernel = CopulaKernel(0.7, 1.5, 3)
    whole = kernel.normal_noise(5, (0, 0, 0), (GRID,) * 3, GRID)
    part = kernel.normal_noise(5, (30, -3, 7), (6, 9, 5), GRID)
    index = [np.arange(s, s + n) % GRID for s, n in ((30, 6), (-3, 9), (7, 5))]
    assert torch.equal(part, whole[index[0]][:, index[1]][:, :, index[2]])
    u_part = kernel.uniform_noise(5, (30, -3, 7), (6, 9, 5), GRID)
    u_whole = kernel.uniform_noise(5, (0, 0, 0), (GRID,) * 3, GRID)
    assert torch.equal(u_part[0], u_whole[0][index[0]][:, index[1]][:, :, index[2]])
    z = whole.numpy()
    # a correlation length of ~3 voxels: ~GRID^3 / 30 independent values per estimate
    bound = 4.0 * math.sqrt(30.0 / z.size)
    assert abs(z.var() - 1.0) < bound
    for lag in (1, 2):
        got = float((z * np.roll(z, lag, axis=1)).mean() / z.var())
        assert abs(got - kernel.correlation([lag])[0]) < bound


def test_kernel_checks_its_settings(tmp_path) -> None:
    """Out-of-range settings name the setting; a saved kernel loads equal."""
    with pytest.raises(ConfigError, match="coherent"):
        CopulaKernel(1.5, 1.0, 2)
    with pytest.raises(ConfigError, match="width"):
        CopulaKernel(0.5, 0.0, 2)
    kernel = CopulaKernel(0.4, 1.1, 2, {"lags": [1, 2]})
    kernel.save(tmp_path / "copula.json")
    loaded = CopulaKernel.load(tmp_path / "copula.json")
    assert loaded == kernel and loaded.fit == {"lags": [1, 2]}


@pytest.mark.parametrize("family", ["normal", "gumbel"])
def test_quantile_has_the_law_of_independent_draws(family) -> None:
    """Quantiles of uniforms: the closed form ``y = m + s q(v)`` of one component at the
    conditional level ``v = (u - 1 + p) / p`` (``q = Phi^-1``, or ``ln(-ln(1 - v))`` for a
    minimum-Gumbel law), empty where ``u <= 1 - p``; the occupied fraction is the mean
    occupancy, and the occupied log masses follow the law of
    :meth:`OccupancyMixture.from_noise`'s draws (two-sample KS)."""
    dist = synthetic_law(family)
    u = voxel_noise(1, (0, 0, 0), (GRID,) * 3, GRID, 1)[None]
    mass = mass_quantile(dist, u)
    p = dist.occupancy().double()
    v = ((u - 1 + p) / p).clamp(min=1e-300)
    q = torch.log(-torch.log1p(-v)) if family == "gumbel" else torch.special.ndtri(v)
    m, s = dist._log10_params()
    want = torch.where(u > 1 - p, torch.expm1(math.log(10) * (m + s * q)), 0.0)
    torch.testing.assert_close(mass, want.clamp(min=0), rtol=1e-9, atol=0.0)
    occupied = mass > 0
    mean_p = float(p.mean())
    tolerance = 4 * math.sqrt(mean_p * (1 - mean_p) / GRID**3)
    assert abs(float(occupied.double().mean()) - mean_p) < tolerance
    other = dist.from_noise(voxel_noise(2, (0, 0, 0), (GRID,) * 3, GRID)[None])
    test = stats.ks_2samp(np.log10(mass[occupied].numpy()), np.log10(other[other > 0].numpy()))
    assert test.pvalue > 1e-3


@pytest.mark.slow
def test_fit_recovers_a_known_correlated_residual() -> None:
    """On a truth whose latent field has a known correlation (coherent fraction 0.6, Gaussian
    filter of 1.2 voxels), the fitted kernel's latent correlation at lag 1 is the known one
    within 4 standard errors of a correlation estimated from 32^3 voxels (correlation volume
    ~sum_d rho(d)^2 = 1 + 0.36 ((2 pi)^1/2 1.2)^3 ~ 11 voxels) and its width is the known
    one; fresh draws of the fitted copula give the truth's residual correlation at lags 1-3
    (its correlation length) within 4 standard deviations of their own scatter, which
    independent draws miss."""
    dist = synthetic_law()
    truth = known_truth(dist, seed=0)
    kernel = fit_copula(dist, truth, radius=3)
    rho = known_correlation([1])[0]
    assert abs(kernel.correlation([1])[0] - rho) < 4.0 * (1.0 - rho**2) * math.sqrt(11 / GRID**3)
    assert kernel.width == pytest.approx(SIGMA)

    lags, mean = [1, 2, 3], dist.mean()[0, 0]
    target = residual_correlation(truth[0, 0], mean, lags, periodic=True)
    shape, seeds = (GRID,) * 3, range(10, 18)
    coherent = np.array(
        [
            residual_correlation(mass_quantile(dist, noise[None])[0, 0], mean, lags, True)
            for noise in (kernel.uniform_noise(s, (0, 0, 0), shape, GRID) for s in seeds)
        ]
    )
    independent = np.array(
        [
            neighbour_correlation(dist.from_noise(noise[None])[0, 0], mean)
            for noise in (voxel_noise(s, (0, 0, 0), shape, GRID) for s in seeds)
        ]
    )
    spread = coherent.std(axis=0, ddof=1) * math.sqrt(1 + 1 / len(coherent))
    assert (abs(coherent.mean(axis=0) - target) < 4 * spread).all()
    assert abs(independent.mean() - target[0]) > 4 * spread[0]


PREDICT_TRANSFORM = FieldTransform([8.0, 8.0], [1.0, 1.0], 1.0, 3.0, log=True, target_max=1e12)
EVAL_TRANSFORM = FieldTransform([10.0, 10.0], [1.0, 1.0], 1.0, 3.0, log=True, target_max=1e12)
SMALL_MOCK = {"box": 32.0, "particles": 32, "grid": 32, "seed": 5, "steps": 5}


@pytest.fixture(scope="module")
def small_net() -> tuple[ProbabilisticNet, list[np.ndarray]]:
    """A small untrained net whose occupancy and masses vary from voxel to voxel, and its
    16^3 input fields."""
    torch.manual_seed(0)
    net = ProbabilisticNet(channels=3, levels=1, convs=1, components=2, family="gumbel")
    net.set_target_transform(PREDICT_TRANSFORM)
    with torch.no_grad():
        net.offset.copy_(torch.tensor([0.0, 3.0, 0.0]))
    rng = np.random.default_rng(3)
    fields = [rng.lognormal(18.0, 2.0, (16,) * 3).astype(np.float32) for _ in range(2)]
    return net.eval(), fields


def _predict(net, fields, region, tile, seeds, copula, **kw):
    options = PredictOptions(tile=tile, progress=False, copula=copula, **kw)
    transform = PREDICT_TRANSFORM
    return predict_region(
        net, fields, region, transform.forward_input, transform.inverse_prediction, options,
        seeds=seeds,
    )  # fmt: skip


def test_predicted_copula_draws_are_coherent_and_independent_of_tiling(small_net) -> None:
    """Copula draws of a wrapping region agree with tiles of 4 and 6 (batches of 1 and 5, small
    chunks) and a sub-region's draw is the same part of the larger one's; on the whole box
    their residual neighbour correlation exceeds independent draws' by more than 4 standard
    errors."""
    net, fields = small_net
    kernel = CopulaKernel(0.9, 1.0, 2)
    region = Region((13, 2, 9), (8, 10, 12), 16)
    mean, draw = _predict(net, fields, region, 4, (4,), kernel, batch_size=1)
    again = _predict(net, fields, region, 6, (4,), kernel, batch_size=5, chunk_voxels=4000)
    # the noise is the same bit for bit (test above); float32 forward passes over other tile
    # shapes differ in the last bits, which a small mass 10^y - 1 amplifies
    np.testing.assert_allclose(draw, again[1], rtol=1e-4)
    np.testing.assert_allclose(mean, again[0], rtol=1e-5)
    (_, sub) = _predict(net, fields, Region((15, 4, 9), (4, 6, 8), 16), 4, (4,), kernel)
    np.testing.assert_allclose(sub, draw[2:6, 2:8, 0:8], rtol=1e-4)

    whole = Region((0, 0, 0), (16,) * 3, 16)
    mean, coherent = _predict(net, fields, whole, 8, (7,), kernel)
    _, independent = _predict(net, fields, whole, 8, (7,), None)
    # standard error of a correlation from 16^3 voxels of correlation volume sum_d rho(d)^2
    a = axis_autocorrelation(kernel.taps(), range(-4, 5))
    volume = 1 + kernel.coherent**2 * (np.einsum("i,j,k->ijk", a, a, a) ** 2).sum() - 0.81
    error = math.sqrt(volume / 16**3)
    gain = neighbour_correlation(coherent, mean) - neighbour_correlation(independent, mean)
    assert gain > 4 * error


def test_draw_correlation_option_is_checked() -> None:
    """A draw correlation other than none / fitted, or a radius below 1, names its key."""
    with pytest.raises(ConfigError, match="evaluation.draw_correlation"):
        EvaluationSettings(draw_correlation="smooth")
    with pytest.raises(ConfigError, match="evaluation.copula_radius"):
        EvaluationSettings(copula_radius=0)


@pytest.mark.slow
def test_evaluation_fits_saves_and_draws_with_the_copula(tmp_path) -> None:
    """draw_correlation=fitted: the test-region evaluation fits the copula on the validation
    cube, saves it as copula.json, and its model_draw is the prediction's copula draw (not the
    independent one)."""
    store = MockUniverse(**SMALL_MOCK, cache_dir=mock_cache_dir()).build()
    torch.manual_seed(0)
    net = ProbabilisticNet(in_channels=2, channels=3, levels=1, convs=1, components=2).eval()
    net.set_target_transform(EVAL_TRANSFORM)
    with torch.no_grad():
        net.offset.copy_(torch.tensor([0.0, 3.0, 0.0]))
    splits = SimpleNamespace(
        test=Region((4, 8, 0), (16,) * 3, store.grid), val=Region((20, 0, 16), (12,) * 3, 32)
    )
    dm = SimpleNamespace(
        store=store, splits=splits, transform=EVAL_TRANSFORM, inputs=["dm", "subhalo"],
        target="stellar",
    )  # fmt: skip
    settings = EvaluationSettings(
        tile=8, report=ReportOptions(k_pairs=((1.0, 1.2),), thetas=(0.5, 2.0), slice_width=2),
        draws=1, draw_correlation="fitted", copula_radius=1,
    )  # fmt: skip
    evaluate_test_region(net, dm, tmp_path, settings, seed=3)
    kernel = CopulaKernel.load(tmp_path / COPULA_FILE)
    assert kernel.fit["region"] == {"start": [20, 0, 16], "size": [12, 12, 12]}
    inputs = [store.read(name) for name in dm.inputs]
    options = replace(settings.predict_options(progress=False), copula=kernel)
    _, draw = predict_fields(net, EVAL_TRANSFORM, inputs, splits.test, options, seeds=[3])
    _, independent = predict_fields(
        net, EVAL_TRANSFORM, inputs, splits.test, replace(options, copula=None), seeds=[3]
    )
    written = FieldStore(tmp_path / "fields").read("model_draw_0")
    np.testing.assert_allclose(written, draw, rtol=1e-4)
    assert not np.allclose(written, independent)
