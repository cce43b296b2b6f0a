"""Velocities of the mock for redshift-space statistics: the PM run's momenta are synchronous
with its positions (linear growth: v = 100 f psi km/s at z = 0), a central moves with its halo
(its members' mean) and a satellite with its particle, the mock's catalogues and its
gravity-only source carry them, and painted galaxies off any halo take the nearest halo's."""

from __future__ import annotations

import numpy as np
import pytest

from dm2gal.infer.catalog import field_galaxies, nearest_velocities
from dm2gal.io.gravity_fields import Tracers
from dm2gal.paint.sources import MockSource
from dm2gal.sim import MockUniverse
from dm2gal.sim.cosmology import Cosmology
from dm2gal.sim.galaxies import GalaxyModel, Hosts, populate
from dm2gal.sim.lpt import lattice, lpt_displacements
from dm2gal.sim.pm import ParticleMesh, evolve, peculiar_velocity


def _slope(measured: np.ndarray, expected: np.ndarray) -> float:
    """Least-squares ratio of ``measured`` to ``expected``."""
    return float((measured * expected).sum() / (expected * expected).sum())


def test_pm_velocities_follow_linear_growth_at_the_last_step():
    """A small plane wave grows linearly: at a = 1 its displacement is psi and its velocity
    100 f(1) psi km/s. Five steps: momenta left half a step behind would be 8% low."""
    cosmo, box, n = Cosmology(), 32.0, 16
    q = lattice(n, box)
    psi = np.zeros_like(q)
    psi[:, 0] = 0.05 * np.sin(2 * np.pi * q[:, 0] / box)
    a0 = 0.1
    start = (q + cosmo.growth(a0) * psi, cosmo.momentum_factor(a0) * psi)
    pos, mom = evolve(*start, np.linspace(a0, 1.0, 6), cosmo, ParticleMesh(2 * n, box, cosmo.Om0))
    lag = cosmo.momentum_factor(1.0 - 0.09) / cosmo.momentum_factor(1.0)
    assert lag < 0.93
    shift = np.mod(pos - q + box / 2, box) - box / 2
    assert _slope(shift, psi) == pytest.approx(1.0, abs=0.03)
    velocity = peculiar_velocity(mom, 1.0)
    assert _slope(velocity, 100.0 * cosmo.growth_rate(1.0) * psi) == pytest.approx(1.0, abs=0.03)


def test_centrals_move_with_their_halo_and_satellites_with_their_particle():
    n_h, per_halo = 200, 30
    rng = np.random.default_rng(5)
    particle_pos = np.zeros((n_h * per_halo, 3))
    particle_pos[:, 0] = np.arange(n_h * per_halo)  # x encodes the particle index
    particle_vel = rng.normal(0, 300, (n_h * per_halo, 3))
    members = list(np.arange(n_h * per_halo).reshape(n_h, per_halo))
    hosts = Hosts(particle_pos[::per_halo], np.full(n_h, 1e14), members, particle_pos,
                  np.zeros(n_h), particle_vel=particle_vel)  # fmt: skip
    halos, gals = populate(hosts, 1e12, 0.6774, GalaxyModel(), rng)
    mean = particle_vel.reshape(n_h, per_halo, 3).mean(axis=1)
    np.testing.assert_allclose(halos.vel, mean, rtol=1e-12)
    np.testing.assert_allclose(gals.vel[gals.central], mean, rtol=1e-12)
    sats = ~gals.central
    assert sats.sum() > 100
    np.testing.assert_array_equal(gals.vel[sats], particle_vel[gals.pos[sats, 0].astype(int)])
    without = Hosts(hosts.pos, hosts.mass, hosts.members, hosts.particle_pos, hosts.env)
    _, blind = populate(without, 1e12, 0.6774, GalaxyModel(), rng)
    assert np.isnan(blind.vel).all()


@pytest.fixture(scope="module")
def tiny_mock(tmp_path_factory):
    mock = MockUniverse(box=32.0, particles=16, grid=16, seed=3,
                        cache_dir=tmp_path_factory.mktemp("mock"))  # fmt: skip
    mock.build()
    return mock


def test_mock_velocities_are_the_linear_flow_on_large_scales(tiny_mock):
    """The particles' z=0 velocities against the Zel'dovich flow of the same ICs: the same
    direction and size (slope 0.66 measured, nonlinear at 2 Mpc/h spacing; a sign or unit
    error is -1 or 100x off), and the catalogues carry them."""
    _, vel = tiny_mock.phase_space()
    psi1, _ = lpt_displacements(tiny_mock._delta_k(), tiny_mock.box)
    linear = 100.0 * tiny_mock.cosmo.growth_rate(1.0) * psi1
    assert 0.5 < _slope(vel, linear) < 0.85
    halos, gals = tiny_mock.catalogs()
    assert np.isfinite(halos.vel).all() and np.isfinite(gals.vel).all()
    np.testing.assert_array_equal(gals.vel[gals.central], halos.vel[gals.host[gals.central]])
    tracers = MockSource(tiny_mock.store_dir).tracers()
    np.testing.assert_array_equal(tracers.vel, halos.vel)


def test_painted_galaxies_off_halos_take_the_nearest_halos_velocity():
    box, grid = 16.0, 8
    sites = np.array([[2.0, 2.0, 2.0], [10.0, 10.0, 10.0], [15.9, 0.1, 8.0]])
    vel = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    # periodic: (0.2, 15.8, 8) is nearest to the third site across two faces
    at = nearest_velocities(np.array([[2.5, 1.0, 2.0], [0.2, 15.8, 8.0], [9.0, 11, 10]]),
                            sites, vel, box)  # fmt: skip
    np.testing.assert_array_equal(at, vel[[0, 2, 1]])
    tracers = Tracers(sites, np.array([1e12, 1e13, 1e11]), vel, np.arange(3))
    field = np.zeros((grid,) * 3, dtype=np.float32)
    field[4, 4, 4] = 1e10  # no footprint covers the node at (8, 8, 8) Mpc/h
    galaxies, _ = field_galaxies(field, box, tracers)
    node = galaxies.host < 0
    assert node.sum() == 1
    np.testing.assert_array_equal(galaxies.vel[node], vel[[1]])
    assert np.isnan(
        nearest_velocities(np.zeros((2, 3)), np.zeros((0, 3)), np.zeros((0, 3)), 1.0)
    ).all()
