"""Tests of the mock's oracle: the galaxy model's expectation and an independent draw.

References are independent of the code under test: ``scipy.integrate.quad`` for the satellite
mass integral, a direct sum over the Poisson pmf for the capped count, and the average of many
``populate`` draws for the whole expectation (per site, within its sampling noise).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

import dm2gal.sim.mock as mock_module
from dm2gal.hod import BinnedHOD
from dm2gal.io.paint import paint
from dm2gal.sim import MockUniverse
from dm2gal.sim.galaxies import (
    GalaxyModel,
    Hosts,
    capped_poisson_mean,
    mean_satellite_shmr,
    moster13,
    oracle_mean,
    populate,
)
from dm2gal.stats import pylians as stats
from dm2gal.stats.bands import band_scores, default_bands

H = 0.6774


def expected_total(hosts: Hosts, min_sub_mass: float, h: float, model: GalaxyModel) -> float:
    """Sum over hosts of E[central] + E[min(N, m)] E[satellite], from quad and the Poisson pmf."""
    mass, members, env = hosts.mass, hosts.members, hosts.env
    boost = np.exp(0.5 * (model.scatter_dex * np.log(10)) ** 2) * 10 ** (model.env_dex * env)
    a, total = model.sub_slope, 0.0
    for i, m in enumerate(mass):
        sat = 0.0
        mu_min = min_sub_mass / m
        if mu_min < model.sub_max:
            rate = model.sub_norm / a * (mu_min**-a - model.sub_max**-a)
            k = np.arange(0, int(rate + 40 * np.sqrt(rate) + 50))
            count = np.sum(np.minimum(k, len(members[i])) * sps.poisson.pmf(k, rate))
            norm = integrate.quad(lambda mu: mu ** (-a - 1), mu_min, model.sub_max)[0]
            shmr = integrate.quad(
                lambda mu, m=m: moster13(mu * m, h, model) * mu ** (-a - 1),
                mu_min,
                model.sub_max,
                epsrel=1e-12,
                limit=200,
            )[0]
            sat = count * shmr / norm
        total += (float(moster13(m, h, model)) + sat) * boost[i]
    return total


def test_capped_poisson_mean_against_the_pmf():
    for rate, cap in [(0.3, 1), (2.5, 3), (27.0, 30), (27.0, 3), (5.0, 200)]:
        k = np.arange(400)
        direct = np.sum(np.minimum(k, cap) * sps.poisson.pmf(k, rate))
        assert capped_poisson_mean(np.array([rate]), np.array([cap]))[0] == pytest.approx(
            direct, rel=1e-12
        )


def test_mean_satellite_shmr_against_quad():
    model, a, m_min = GalaxyModel(), GalaxyModel().sub_slope, 1e11
    mass = np.array([5e12, 1e13, 1e14, 1e15])
    got = mean_satellite_shmr(mass, m_min, H, model)
    for m, value in zip(mass, got, strict=True):
        lo = m_min / m
        norm = integrate.quad(lambda mu: mu ** (-a - 1), lo, 0.1)[0]
        num = integrate.quad(
            lambda mu, m=m: moster13(mu * m, H, model) * mu ** (-a - 1), lo, 0.1, epsrel=1e-12
        )[0]
        assert value == pytest.approx(num / norm, rel=1e-9)
    assert mean_satellite_shmr(np.array([1e12]), m_min, H, model)[0] == 0.0  # m_min/M = sub_max


def synthetic_hosts() -> Hosts:
    """Six hosts from no satellites (1e12) to a strongly capped one (1e15 with 3 members)."""
    mass = np.array([1e12, 3e13, 1e14, 1e15, 1e15, 4e14])
    count = [25, 40, 60, 3, 30, 80]
    members = list(np.split(np.arange(sum(count)), np.cumsum(count)[:-1]))
    particle_pos = np.zeros((sum(count), 3))
    particle_pos[:, 0] = np.arange(sum(count))  # x encodes the particle index
    halo_pos = np.full((len(mass), 3), -1.0)
    halo_pos[:, 1] = np.arange(len(mass))  # y encodes the halo of a central
    env = np.array([0.5, -1.0, 0.0, 1.2, -0.3, 2.0])
    return Hosts(halo_pos, mass, members, particle_pos, env)


def test_oracle_mean_is_the_average_of_populate_per_site():
    hosts, model = synthetic_hosts(), GalaxyModel()
    pos, weight = oracle_mean(hosts, 1e12, H, model)
    assert weight.sum() == pytest.approx(expected_total(hosts, 1e12, H, model), rel=1e-9)
    # the expected sites: halo centres then each host's members
    np.testing.assert_array_equal(pos[: len(hosts)], hosts.pos)
    np.testing.assert_array_equal(pos[len(hosts) :, 0], np.concatenate(hosts.members))

    draws, n_sites = 3000, len(hosts) + len(hosts.particle_pos)
    total, total2 = np.zeros(n_sites), np.zeros(n_sites)
    rng = np.random.default_rng(7)
    for _ in range(draws):
        _, gals = populate(hosts, 1e12, H, model, rng)
        site = np.where(gals.central, gals.pos[:, 1], len(hosts) + gals.pos[:, 0]).astype(int)
        per_site = np.bincount(site, weights=gals.mstar, minlength=n_sites)
        total += per_site
        total2 += per_site**2
    mean = total / draws
    err = np.sqrt(np.maximum(total2 / draws - mean**2, 0) / draws)
    # every site within 5 sigma; sites that can never hold a galaxy get exactly 0
    np.testing.assert_array_less(np.abs(mean - weight), 5 * err + 1e-9 * weight.max())
    np.testing.assert_array_equal(weight[err == 0], mean[err == 0])
    # the cap: the 3-member 1e15 host gets ~3 satellites, not the ~27 of its Poisson rate
    capped = slice(len(hosts) + 125, len(hosts) + 128)
    assert (weight[capped] > 0).all() and mean[capped].sum() == pytest.approx(
        weight[capped].sum(), rel=0.05
    )


# -- on a small mock ---------------------------------------------------------------------------
SMALL = {"box": 48.0, "particles": 48, "grid": 48, "seed": 5, "steps": 5}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 48^3 mock (particle mass 8.6e10 Msun/h, ~270 halos) and the galaxy model's inputs."""
    seen = []

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return populate(*args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(mock_module, "populate", spy)
    try:
        src = MockUniverse(**SMALL, cache_dir=tmp_path_factory.mktemp("oracle"))
        store = src.build()
    finally:
        patch.undo()
    (hosts,), kwargs = seen[0]
    kwargs = {k: v for k, v in kwargs.items() if k != "rng"}
    return src, store, hosts, kwargs


def test_mock_oracle_total_is_the_expectation(small):
    src, store, hosts, physics = small
    expected = expected_total(hosts, **physics)
    total = store.read("oracle_mean").sum(dtype=np.float64)
    assert total == pytest.approx(expected, rel=1e-6)
    # the truth and the independent draw are two draws of the model: near it, not equal
    truth, draw = (store.read(n).sum(dtype=np.float64) for n in ("stellar", "oracle_draw"))
    assert truth != draw
    assert truth == pytest.approx(expected, rel=0.5) and draw == pytest.approx(expected, rel=0.5)


def test_mean_of_many_draws_converges_to_oracle_mean(small):
    """200 independent galaxy draws on the same halos, averaged on a coarse 4^3 grid."""
    src, store, hosts, physics = small
    coarse = 4
    fields = []
    for seed in range(200):
        _, gals = populate(hosts, **physics, rng=np.random.default_rng(1000 + seed))
        fields.append(paint(gals.pos, gals.mstar, coarse, src.box).astype(np.float64))
    fields = np.array(fields)
    pos, weight = oracle_mean(hosts, **physics)
    oracle = paint(pos, weight, coarse, src.box).astype(np.float64)
    mean, err = fields.mean(axis=0), fields.std(axis=0, ddof=1) / np.sqrt(len(fields))
    totals = fields.sum(axis=(1, 2, 3))
    total_err = totals.std(ddof=1) / np.sqrt(len(totals))
    assert abs(totals.mean() - oracle.sum()) < 4 * total_err
    occupied = err > 0
    assert occupied.sum() > 20
    np.testing.assert_array_equal(oracle[~occupied], 0.0)  # no halo reaches these voxels
    pull = (mean - oracle)[occupied] / err[occupied]
    assert np.abs(pull).max() < 4.5  # ~60 voxels: max |pull| of Gaussians stays below ~3.5
    assert np.mean(pull**2) == pytest.approx(1.0, abs=0.5)
    # and the stored field is the same painting at the mock's grid
    fine = paint(pos, weight, src.grid, src.box)
    np.testing.assert_allclose(store.read("oracle_mean"), fine, rtol=1e-6, atol=0)


def test_oracle_mean_has_the_highest_r_in_every_band(small):
    """Against truth: oracle_mean's band-mean r(k) beats oracle_draw's and a binned HOD's."""
    src, store, _, _ = small
    truth = store.read("stellar", mmap=False)
    hod = (
        BinnedHOD()
        .fit(*src.catalogs(), lambda pos: np.zeros(len(pos), dtype=bool), src.box)
        .paint(src.catalogs()[0], src.grid, src.box, seed=0)
    )
    bands = default_bands(src.box, src.grid)
    scores = {}
    for name, field in [
        ("oracle_mean", store.read("oracle_mean", mmap=False)),
        ("oracle_draw", store.read("oracle_draw", mmap=False)),
        ("hod_binned", hod),
    ]:
        xp = stats.cross_power(truth, field, src.box)
        scores[name] = band_scores(xp.k, xp.pk_b / xp.pk_a, xp.r, bands)
        nmodes = {b.name: xp.nmodes[(xp.k > b.lo) & (xp.k <= b.hi)].sum() for b in bands}
    for band in bands:
        key = f"rk_mean_{band.name}"
        best = scores["oracle_mean"][key]
        # noise of a band-mean r: ~ (1 - r^2) / sqrt(modes in the band)
        noise = (1 - best**2) / np.sqrt(nmodes[band.name])
        for other in ("oracle_draw", "hod_binned"):
            assert best > scores[other][key] - 2 * noise, (band, other, scores)


def test_realisation_changes_only_the_seed(small):
    src, _, _, _ = small
    other = src.realisation(6)
    assert other.seed == 6 and src.seed == 5 and other.cache_dir == src.cache_dir
    assert {k: v for k, v in other.config.items() if k != "seed"} == {
        k: v for k, v in src.config.items() if k != "seed"
    }
    assert other.hash != src.hash
    with pytest.raises(ValueError, match="seed"):
        src.realisation(-1)
