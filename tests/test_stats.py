"""Pylians-based statistics against analytic fields: shot noise, plane waves, r(k), Q, xi."""

from __future__ import annotations

import numpy as np
import pytest

from dm2gal.stats import base
from dm2gal.stats import pylians as stats

BOX = 50.0  # Mpc/h
N = 32


def white_noise(seed: int, sigma: float = 0.3, n: int = N) -> np.ndarray:
    """Mass field 1e9 (1 + sigma g) with g unit Gaussian white noise (float32)."""
    g = np.random.default_rng(seed).standard_normal((n, n, n))
    return (1e9 * (1.0 + sigma * g)).astype(np.float32)


def plane_wave(m: int, amp: float = 0.5, n: int = N) -> np.ndarray:
    """Mass field 1 + amp cos(2 pi m x / N) along axis 0 (float32)."""
    x = np.arange(n)
    wave = 1.0 + amp * np.cos(2 * np.pi * m * x / n)
    return np.broadcast_to(wave[:, None, None], (n, n, n)).astype(np.float32)


def test_white_noise_power_equals_shot_noise():
    field = white_noise(0)
    var = stats.overdensity(field).var(dtype=np.float64)
    shot = BOX**3 / N**3 * var
    ps = stats.power_spectrum(field, BOX, mas="None")
    # |delta_k|^2 is exponential per mode: each bin scatters by 1/sqrt(nmodes) around the shot noise
    assert np.all(np.abs(ps.pk / shot - 1.0) < 5.0 / np.sqrt(ps.nmodes))
    assert np.sum(ps.pk * ps.nmodes) / np.sum(ps.nmodes) == pytest.approx(shot, rel=0.02)
    # all N^3 / 2 + 4 independent modes but the DC one are binned
    assert ps.nmodes.sum() == (N**3 - 8) // 2 + 8 - 1


def test_plane_wave_power_in_one_bin_with_exact_amplitude():
    m, amp = 3, 0.5
    ps = stats.power_spectrum(plane_wave(m, amp), BOX, mas="None")
    kf = 2 * np.pi / BOX
    hit = 2  # bins start at |n| in [1, 2)
    others = np.delete(ps.pk, hit)
    assert np.max(np.abs(others)) < 1e-9 * ps.pk[hit]
    # one independent mode (m, 0, 0) carries |delta_k|^2 = (N^3 amp / 2)^2
    assert ps.pk[hit] == pytest.approx(BOX**3 * amp**2 / 4 / ps.nmodes[hit], rel=1e-5)
    assert m * kf <= ps.k[hit] < (m + 1) * kf


def test_cic_window_deconvolution_of_a_plane_wave():
    m = 5
    raw = stats.power_spectrum(plane_wave(m), BOX, mas="None").pk[m - 1]
    cic = stats.power_spectrum(plane_wave(m), BOX, mas="CIC").pk[m - 1]
    x = np.pi * m / N
    assert cic / raw == pytest.approx((x / np.sin(x)) ** 4, rel=1e-5)


def test_cross_correlation_identical_and_independent():
    a, b = white_noise(1), white_noise(2)
    same = stats.cross_power(a, a, BOX, mas="None")
    np.testing.assert_allclose(same.r, 1.0, atol=1e-6)
    np.testing.assert_allclose(same.pk_a, stats.power_spectrum(a, BOX, mas="None").pk, rtol=1e-6)
    indep = stats.cross_power(a, b, BOX, mas="None")
    # r of independent fields scatters by 1/sqrt(nmodes) per bin; mode-weighted mean by 0.008
    assert np.all(np.abs(indep.r) < 5.0 / np.sqrt(indep.nmodes))
    assert abs(np.sum(indep.r * indep.nmodes) / np.sum(indep.nmodes)) < 0.03


def test_bispectrum_of_skewed_white_noise_has_reduced_q_two_thirds():
    # independent gamma(a) voxels: B = kappa3 (V / N^3)^2 and Q = kappa3 / (3 kappa2^2) (= 2/3) at
    # every triangle; the estimator scatters by ~5-10% per angle on 32^3 at k ~ 10 kF
    field = np.random.default_rng(3).gamma(0.05, 1e9, size=(N, N, N)).astype(np.float32)
    delta = stats.overdensity(field).astype(np.float64)
    k2, k3 = np.mean(delta**2), np.mean(delta**3)
    theta = np.linspace(0.2, 2.2, 5)
    kf = 2 * np.pi / BOX
    bk = stats.bispectrum(field, BOX, 9 * kf, 10 * kf, theta, mas="None")
    assert bk.B.shape == theta.shape == bk.Q.shape
    np.testing.assert_allclose(
        bk.k3, np.hypot(10 * kf * np.sin(theta), kf * (10 * np.cos(theta) + 9))
    )
    b_white = k3 * (BOX**3 / N**3) ** 2
    np.testing.assert_allclose(bk.B, b_white, rtol=0.25)
    np.testing.assert_allclose(bk.Q, k3 / (3 * k2**2), rtol=0.25)
    assert np.mean(bk.B) == pytest.approx(b_white, rel=0.1)
    assert np.mean(bk.Q) == pytest.approx(2 / 3, rel=0.1)


def test_correlation_function_of_a_plane_wave():
    m, amp = 2, 0.4
    r, xi = stats.correlation_function(plane_wave(m, amp), BOX, mas="None")
    # reference: mean over integer offsets with floor(|s|) = bin of (amp^2 / 2) cos(2 pi m s_x / N)
    s = np.fft.fftfreq(N, 1.0 / N)
    sx, sy, sz = np.meshgrid(s, s, s, indexing="ij")
    dist = np.sqrt(sx**2 + sy**2 + sz**2)
    idx = dist.astype(int).ravel()
    count = np.bincount(idx)
    ref = np.bincount(idx, amp**2 / 2 * np.cos(2 * np.pi * m * sx / N).ravel()) / count
    rmean = np.bincount(idx, dist.ravel()) / count * BOX / N
    np.testing.assert_allclose(r, rmean[1:], rtol=1e-6)
    np.testing.assert_allclose(xi, ref[1:], atol=1e-5)


def test_voxel_pdf_counts_non_empty_voxels():
    field = np.zeros((4, 4, 4), dtype=np.float32)
    field[0, 0, :2] = 1e9
    field[1, 1, 1] = 1e10
    edges, density = base.voxel_pdf(field, bins=np.array([8.5, 9.5, 10.5]))
    np.testing.assert_allclose(density, [2 / 64, 1 / 64])
    assert np.sum(density * np.diff(edges)) == pytest.approx(3 / 64)


def test_pdf_decade_abs_err_counts_voxels_per_decade():
    """Hand counts: decade 1e8 holds 100 truth voxels and 90 predicted (-10%), decade 1e9 100 and
    130 (+30%); decade 1e10 holds 10 truth voxels (< PDF_MIN_COUNT) and is left out."""
    truth = np.zeros(400)
    truth[:100], truth[100:200], truth[200:210] = 3e8, 3e9, 3e10
    pred = np.zeros(400)
    pred[:90], pred[90:220], pred[220:300] = 3e8, 3e9, 3e10
    assert base.pdf_decade_abs_err(truth, pred) == pytest.approx(0.3)
    assert base.pdf_decade_abs_err(truth, truth) == 0.0
    assert np.isnan(base.pdf_decade_abs_err(np.zeros(8), np.ones(8)))


def test_summary_scores():
    truth = (white_noise(4) + 2e9).astype(np.float32)
    perfect = stats.summary(truth, truth.copy(), BOX, mas="None")
    assert perfect["total_mass_rel_err"] == 0.0
    assert perfect["pk_ratio_abs_err"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["rk_mean"] == pytest.approx(1.0, abs=1e-9)
    assert perfect["log_rmse"] == 0.0
    assert perfect["k_max"] == pytest.approx(base.nyquist(BOX, N))
    doubled = stats.summary(truth, 2 * truth, BOX, k_max=1.0, mas="None")
    assert doubled["total_mass_rel_err"] == pytest.approx(1.0, rel=1e-6)
    assert doubled["pk_ratio_abs_err"] == pytest.approx(0.0, abs=1e-6)  # overdensity unchanged
    assert doubled["log_rmse"] == pytest.approx(np.log10(2.0), rel=1e-6)
    noisy = stats.summary(truth, white_noise(5) + 2e9, BOX, k_max=1.0, mas="None")
    assert abs(noisy["rk_mean"]) < 0.2 and noisy["pk_ratio_abs_err"] < 0.2


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda f: stats.power_spectrum(f.astype(np.float64), BOX), TypeError, "float32"),
        (lambda f: stats.power_spectrum(f[:, :, :8], BOX), ValueError, "cubic"),
        (lambda f: stats.power_spectrum(f, BOX, mas="CLC"), ValueError, "mas must be one of"),
        (lambda f: stats.power_spectrum(f, -1.0), ValueError, "box size"),
        (lambda f: stats.power_spectrum(f - f, BOX), ValueError, "mean must be > 0"),
        (lambda f: stats.cross_power(f, f[:8, :8, :8], BOX), ValueError, "share a grid"),
        (lambda f: stats.bispectrum(f, BOX, 0.01, 0.5), ValueError, "below the fundamental"),
        (lambda f: stats.bispectrum(f, BOX, 3.0, 3.0), ValueError, "beyond the grid"),
        (lambda f: stats.bispectrum(f, BOX, 0.5, 0.6, [[0.1]]), ValueError, "1-D array"),
        (lambda f: base.voxel_pdf(-f), ValueError, "negative"),
        (lambda f: stats.summary(f, f, BOX, k_max=0.01), ValueError, "below the first k bin"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    field = white_noise(6, n=16)
    with pytest.raises(error, match=match):
        call(field)


def test_non_finite_field_raises():
    field = white_noise(7, n=16)
    field[3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        stats.correlation_function(field, BOX)
