"""HOD means and the environment-aware HODs: a mean is the expectation of the draws, and an HOD
that knows environment recovers an environment dependence planted in a catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import fft

from dm2gal.hod import BinnedHOD, DecoratedHOD, Environment, Zheng07HOD
from dm2gal.hod.environment import coarsened
from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog
from dm2gal.sim.galaxies import smoothed_log_density
from dm2gal.sim.ics import wavenumbers

BOX, GRID = 50.0, 32
TRUE_RADIUS = 4.0
ENV_DEX = 0.5  # log10 M* per standard deviation of the environment at fixed mass


def nothing_heldout(pos: np.ndarray) -> np.ndarray:
    return np.zeros(len(pos), dtype=bool)


def lognormal_dm(seed: int, grid: int = GRID) -> np.ndarray:
    """A lognormal DM mass grid with structure on a few Mpc/h (Msun/h per voxel)."""
    rng = np.random.default_rng(seed)
    white = fft.rfftn(rng.standard_normal((grid,) * 3))
    kx, ky, kz = wavenumbers(grid, BOX)
    k = np.sqrt(kx**2 + ky**2 + kz**2)
    g = fft.irfftn(white * np.exp(-0.5 * (k * 1.5) ** 2), s=(grid,) * 3)
    return (1e11 * np.exp(g / g.std() - 0.5)).astype(np.float32)


@pytest.fixture(scope="module")
def universe() -> tuple[np.ndarray, HaloCatalog, GalaxyCatalog, np.ndarray]:
    """Hosts at random places; each has a central whose log10 M* is a power law in mass plus
    ``ENV_DEX`` times its standardised environment on ``TRUE_RADIUS``; half the hosts also
    have a satellite 0.3 Mpc/h away. Returns the DM grid, hosts, galaxies and the hosts'
    standardised environment."""
    rng = np.random.default_rng(3)
    dm = lognormal_dm(4)
    n = 6000
    pos = rng.random((n, 3)) * BOX
    mass = 10.0 ** rng.uniform(11.0, 14.0, n)
    env = smoothed_log_density(dm.astype(np.float64), BOX, TRUE_RADIUS, pos)
    z = (env - env.mean()) / env.std()
    log_cen = 10.0 + 0.5 * (np.log10(mass) - 12.0) + ENV_DEX * z
    has_sat = rng.random(n) < 0.5
    sat_host = np.flatnonzero(has_sat)
    sat_pos = np.mod(pos[sat_host] + [0.3, 0.0, 0.0], BOX)
    halos = HaloCatalog(pos=pos, mass=mass, n_sub=1 + has_sat.astype(int))
    galaxies = GalaxyCatalog(
        pos=np.concatenate([pos, sat_pos]),
        mstar=10.0 ** np.concatenate([log_cen, log_cen[sat_host] - 1.0]),
        host=np.concatenate([np.arange(n), sat_host]),
        central=np.arange(n + len(sat_host)) < n,
        host_mass=np.concatenate([mass, mass[sat_host]]),
    )
    return dm, halos, galaxies, z


def test_coarsening_keeps_the_mass_and_the_smoothed_field():
    dm = lognormal_dm(1, grid=64)
    coarse = coarsened(dm, BOX, radius=8.0)  # voxel 0.78 -> 1.56 Mpc/h <= 2 Mpc/h
    assert coarse.shape == (32,) * 3
    np.testing.assert_allclose(coarse.sum(), dm.sum(), rtol=1e-6)
    assert coarsened(dm, BOX, radius=2.0) is dm  # no factor keeps the voxel <= 0.5 Mpc/h
    pos = np.random.default_rng(0).random((200, 3)) * BOX
    env = Environment([dm], BOX)
    fine = smoothed_log_density(dm.astype(np.float64), BOX, 8.0, pos)
    # block-summing adds a top-hat of <= R/4 (sigma <= 0.07 R) to the smoothing
    coarse_env = env.at(pos, 8.0)
    assert np.corrcoef(coarse_env, fine)[0, 1] > 0.99
    assert np.sqrt(np.mean((coarse_env - fine) ** 2)) < 0.1 * fine.std()


def test_environment_of_side_by_side_boxes_reads_each_box():
    a, b = lognormal_dm(1), lognormal_dm(2)
    env = Environment([a, b], BOX)
    pos = np.random.default_rng(0).random((50, 3)) * BOX
    np.testing.assert_allclose(env.at(pos + [BOX, 0, 0], 2.0), Environment([b], BOX).at(pos, 2.0))
    with pytest.raises(ValueError, match="2 DM field"):
        env.at(pos + [2 * BOX, 0, 0], 2.0)


@pytest.mark.parametrize(
    "hod",
    [BinnedHOD(n_bins=6, mean_offsets=1000), BinnedHOD(n_bins=6, env_bins=3, env_radii=[4.0])],
    ids=["binned", "binned_env"],
)
def test_binned_mean_is_the_average_of_its_draws(universe, hod):
    dm, halos, galaxies, _ = universe
    env = Environment([dm], BOX)
    hod.fit(halos, galaxies, nothing_heldout, BOX, env)
    grid = 8
    mean = hod.paint_mean(halos, grid, BOX, env).astype(np.float64)
    draws = np.stack([hod.paint(halos, grid, BOX, seed, env) for seed in range(300)])
    totals = draws.sum(axis=(1, 2, 3))
    assert abs(mean.sum() - totals.mean()) < 3 * totals.std() / np.sqrt(len(totals))
    average = draws.mean(axis=0)
    error = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(average - mean) < 5 * error + 1e-6 * mean.max())


def test_zheng07_mean_is_the_average_of_its_draws(universe):
    _, halos, galaxies, _ = universe
    hod = Zheng07HOD(mean_offsets=256).fit(halos, galaxies, nothing_heldout, BOX)
    grid = 4
    mean = hod.paint_mean(halos, grid, BOX).astype(np.float64)
    draws = np.stack([hod.paint(halos, grid, BOX, seed) for seed in range(300)])
    totals = draws.sum(axis=(1, 2, 3))
    assert abs(mean.sum() - totals.mean()) < 3 * totals.std() / np.sqrt(len(totals))
    error = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5 * error)


def test_binned_env_chooses_the_planted_radius_and_predicts_centrals_better(universe):
    dm, halos, galaxies, z = universe
    env = Environment([dm], BOX)
    plain = BinnedHOD(n_bins=6).fit(halos, galaxies, nothing_heldout, BOX)
    aware = BinnedHOD(n_bins=6, env_bins=[1, 4], env_radii=[1.0, TRUE_RADIUS, 8.0])
    aware.fit(halos, galaxies, nothing_heldout, BOX, env)
    assert (aware.env_radius_, aware.env_bins) == (TRUE_RADIUS, 4)
    scores = aware.fitted_params()["env_loglike"]
    assert scores["R=4 bins=4"] > max(scores["R=1 bins=4"], scores["R=8 bins=4"])
    assert scores["R=4 bins=4"] > scores["R=4 bins=1"]  # the environment is worth its cells
    # the central mass each host expects, against the planted one
    true_log = np.log10(galaxies.mstar[galaxies.central])
    rms = {}
    for name, hod in (("plain", plain), ("aware", aware)):
        pos, mstar = hod.mean(halos, BOX, env)
        rms[name] = np.sqrt(np.mean((np.log10(mstar[: len(halos)]) - true_log) ** 2))
    # mass bins of 0.5 dex leave ~0.15 dex of the power law; quartiles remove most of the
    # environment's 0.5 dex (what is left: the spread within a quartile, ~0.2 dex)
    assert rms["plain"] > 0.5 and rms["aware"] < 0.75 * rms["plain"]


def test_binned_env_needs_the_environment(universe):
    _, halos, galaxies, _ = universe
    with pytest.raises(ValueError, match="environment"):
        BinnedHOD(env_bins=4).fit(halos, galaxies, nothing_heldout, BOX)


def test_decorated_recovers_the_planted_shift_and_keeps_the_total(universe):
    dm, halos, galaxies, z = universe
    env = Environment([dm], BOX)
    hod = DecoratedHOD(env_radius=TRUE_RADIUS, env_mass_bins=6)
    hod.fit(halos, galaxies, nothing_heldout, BOX, env)
    # E[ENV_DEX z | z > 0] = ENV_DEX sqrt(2 / pi) for a standard normal z
    assert hod.shmr_shift == pytest.approx(ENV_DEX * np.sqrt(2 / np.pi), abs=0.04)
    params = hod.fitted_params()
    assert -1.0 <= params["mean_occupation_centrals_assembias_param1"] <= 1.0
    # the decoration moves mass between the halves, not in total: the mean keeps the baseline's
    baseline = Zheng07HOD(**{k: v for k, v in hod.params.items()})
    baseline.fitted = True
    ncen = hod.host_model(halos, BOX, env)[1]
    np.testing.assert_allclose(ncen.mean(), baseline.mean_ncen(halos.mass).mean(), rtol=0.02)
    _, mstar = hod.mean(halos, BOX, env)
    upper = z > np.median(z)
    assert mstar[: len(halos)][upper].sum() > 2 * mstar[: len(halos)][~upper].sum()
    # the scatter is left about the decorated relation: the centrals' expected total is kept
    # (a normal z split at its median leaves 1 - 2/pi of its variance)
    assert hod.params["scatter"] == pytest.approx(ENV_DEX * np.sqrt(1 - 2 / np.pi), abs=0.03)
    truth = galaxies.mstar[galaxies.central].sum()
    assert mstar[: len(halos)].sum() == pytest.approx(truth, rel=0.1)
