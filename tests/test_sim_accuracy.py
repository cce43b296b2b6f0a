"""Accuracy of the mock's gravity: the default few-step run against a converged same-seed run.

Same initial conditions remove cosmic variance, so the P(k) ratio measures the integrator
alone. Sizes keep the default's mean particle spacing (0.5 Mpc/h as 64^3 in 32 Mpc/h).
"""

from __future__ import annotations

import numpy as np
import pytest

from dm2gal.io.paint import paint
from dm2gal.sim import MockUniverse
from dm2gal.sim.pm import ParticleMesh, pgd_parameters, pgd_shift

SMALL = {"box": 16.0, "particles": 32, "grid": 32}
CONVERGED = {"steps": 100, "pm_factor": 4, "pgd": False}


def matter_power(pos: np.ndarray, n: int, box: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(k, P, modes)`` of particles painted with CIC on an ``n^3`` grid (window-corrected)."""
    import Pk_library as PKL

    delta = paint(pos, 1.0, n, box)
    delta /= delta.mean(dtype=np.float64)
    delta -= 1.0
    pk = PKL.Pk(delta, box, 0, "CIC", 1, False)
    return pk.k3D, pk.Pk[:, 0], pk.Nmodes3D


def band_ratios(src: MockUniverse, p_ref: np.ndarray) -> np.ndarray:
    """Mode-weighted ``P_src / p_ref`` in quarters of the particle Nyquist wavenumber."""
    n, box = src.particles, src.box
    k, p, modes = matter_power(src.simulate(), n, box)
    edges = np.pi * n / box * np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (k > lo) & (k <= hi)
        out.append(np.sum(modes[sel] * p[sel]) / np.sum(modes[sel] * p_ref[sel]))
    return np.array(out)


def converged_power(seed: int, cache_dir) -> np.ndarray:
    """P(k) of the converged run of ``seed`` at the SMALL size (the bins of matter_power)."""
    src = MockUniverse(**SMALL, **CONVERGED, seed=seed, cache_dir=cache_dir)
    return matter_power(src.simulate(), src.particles, src.box)[1]


# Per-band tolerance on |P / P_converged - 1|, set from the seed scatter at 32^3 / 16 Mpc/h:
# over seeds 1-8 the bands are 0.997 +- 0.003, 0.992 +- 0.016, 0.985 +- 0.045, 0.944 +- 0.093
# (largest deviations 0.006, 0.029, 0.068, 0.143), so each tolerance holds for every seed
# measured. The first two are the target (5% for k <= k_N / 2); the 10% target near k_N is met
# on only 4 seeds of 8 (0.857-0.869 on the others), hence 0.15 in the top band.
BAND_TOLERANCE = np.array([0.05, 0.05, 0.10, 0.15])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2])
def test_default_matches_converged_run_of_the_same_seed(tmp_path, seed):
    """The default within the seed scatter of a converged run per quarter of k_N.

    k_N is the particle Nyquist wavenumber; see BAND_TOLERANCE for the 8-seed scatter.
    """
    converged = converged_power(seed, tmp_path)
    ratio = band_ratios(MockUniverse(**SMALL, seed=seed, cache_dir=tmp_path), converged)
    assert np.all(np.abs(ratio - 1.0) <= BAND_TOLERANCE), ratio
    # the former default (10 steps, no PGD) misses >= 10% of the power near k_N
    plain = MockUniverse(**SMALL, steps=10, pgd=False, seed=seed, cache_dir=tmp_path)
    assert band_ratios(plain, converged)[3] < 0.9


# The targets, |P / P_converged - 1| <= 5% for k <= k_N / 2 and 10% up to k_N: the
# higher-accuracy setting (40 steps on a 4x mesh + PGD) meets them on every seed measured, at
# 32^3 / 16 Mpc/h (seeds 1-8, none used in its calibration; largest deviations 0.003, 0.012,
# 0.032, 0.056) and at 64^3 / 32 Mpc/h (seeds 1-12).
TARGET = np.array([0.05, 0.05, 0.10, 0.10])
ACCURATE = {"steps": 40, "pm_factor": 4}


@pytest.mark.slow
def test_accurate_setting_meets_the_targets_where_the_default_does_not(tmp_path):
    """Seed 3: the default is 14% low near k_N, the 4x-mesh setting within 1%."""
    converged = converged_power(3, tmp_path)
    accurate = MockUniverse(**SMALL, **ACCURATE, seed=3, cache_dir=tmp_path)
    assert np.all(np.abs(band_ratios(accurate, converged) - 1.0) <= TARGET)
    default = MockUniverse(**SMALL, seed=3, cache_dir=tmp_path)
    assert band_ratios(default, converged)[3] < 0.9


def test_pgd_keeps_large_scales_and_sharpens_small_ones():
    src = MockUniverse(box=16.0, particles=32, grid=32, seed=1, pgd=False)
    pos = src.simulate()
    solver = ParticleMesh(2 * src.particles, src.box, src.cosmo.Om0)
    shifted = pgd_shift(pos, solver, *pgd_parameters(10, src.particles, src.box))
    assert shifted.shape == pos.shape
    assert np.all((shifted >= 0) & (shifted < src.box))
    k, p, _ = matter_power(pos, 32, src.box)
    _, p_pgd, _ = matter_power(shifted, 32, src.box)
    large = k < 0.5  # the largest-scale bin (k_N = 6.3 h/Mpc)
    np.testing.assert_allclose(p_pgd[large], p[large], rtol=0.02)
    assert p_pgd[-3:].sum() > 1.2 * p[-3:].sum()  # halos sharpened near k_N


def test_pgd_parameters_interpolate_the_calibration():
    from dm2gal.sim.pm import PGD_CALIBRATIONS

    k_nyquist = np.pi * 64 / 32.0
    for pm_factor, calibration in PGD_CALIBRATIONS.items():
        for steps, (alpha, k_long, k_short) in calibration.steps.items():
            np.testing.assert_allclose(
                pgd_parameters(steps, 64, 32.0, pm_factor),
                (alpha, k_long * k_nyquist, k_short * k_nyquist, calibration.max_shift * 0.5),
            )
    # at the default 128^3 / 75 Mpc/h spacing alpha is 0.0015 for 20 steps
    assert pgd_parameters(20, 128, 75.0)[0] == pytest.approx(0.0015, rel=0.01)
    # on the 4x mesh alpha does not scale with the spacing and shifts are not capped
    assert pgd_parameters(40, 128, 75.0, 4)[0] == pytest.approx(PGD_CALIBRATIONS[4].steps[40][0])
    assert pgd_parameters(40, 128, 75.0, 4)[3] == np.inf
    a10, a20 = PGD_CALIBRATIONS[2].steps[10][0], PGD_CALIBRATIONS[2].steps[20][0]
    assert pgd_parameters(14, 64, 32.0)[0] == pytest.approx(
        np.exp(np.log(a10) + np.log(1.4) / np.log(2.0) * np.log(a20 / a10)), rel=1e-9
    )
    with pytest.raises(ValueError, match="steps"):
        pgd_parameters(200, 64, 32.0)
    with pytest.raises(ValueError, match="pm_factor"):
        pgd_parameters(20, 64, 32.0, 3)
