"""Tests of the mock's halo catalogue: densest-particle centres and M200c (periodic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dm2gal.sim.cosmology import RHO_CRIT
from dm2gal.sim.so import densest_members, spherical_overdensity

BOX = 20.0
DENSITY = 200.0 * RHO_CRIT  # Msun/h per (Mpc/h)^3


def singular_isothermal_sphere(n: int, r_max: float, centre: np.ndarray, seed: int) -> np.ndarray:
    """``n`` particles with radii uniform in ``(0, r_max)``: ``M(<r)`` grows linearly in r."""
    rng = np.random.default_rng(seed)
    radius = r_max * (np.arange(n) + 0.5) / n
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return np.mod(centre + radius[:, None] * direction, BOX)


def test_m200c_of_a_singular_isothermal_sphere_across_the_corner():
    # M(<r) = m n r / r_max, mean density 3 M(<r) / (4 pi r^3) = DENSITY at
    # R200 = sqrt(3 m n / (4 pi r_max DENSITY)); M200 = m n R200 / r_max
    n, r_max, m = 20000, 2.0, 1e10
    centre = np.array([0.05, 19.95, 0.02])
    halo = singular_isothermal_sphere(n, r_max, centre, seed=1)
    background = np.random.default_rng(2).random((2000, 3)) * BOX  # 0.25 per (Mpc/h)^3
    pos = np.concatenate([halo, background])
    labels = np.concatenate([np.zeros(n, dtype=np.int64), np.full(len(background), -1)])
    r200 = np.sqrt(3 * m * n / (4 * np.pi * r_max * DENSITY))
    assert 0.3 * r_max < r200 < 0.8 * r_max
    so = spherical_overdensity(pos, BOX, labels, np.array([n]), m, DENSITY)
    assert so.mass[0] == pytest.approx(m * n * r200 / r_max, rel=0.02)
    assert so.radius[0] == pytest.approx(r200, rel=0.02)
    offset = so.centre[0] - centre
    offset -= BOX * np.round(offset / BOX)
    assert np.linalg.norm(offset) < 0.01 * r200  # the densest particle sits at the cusp
    assert so.mass[0] % m == 0.0


def test_sphere_grows_past_the_first_guess_and_counts_non_members():
    # a compact FoF "group" of 20 particles inside a dense sphere of non-members: the SO
    # mass counts every particle inside R200c, members or not
    m = 1e12
    rng = np.random.default_rng(3)
    centre = np.array([10.0, 10.0, 10.0])
    core = centre + 0.01 * rng.standard_normal((20, 3))
    uniform_r = 1.0  # 5000 particles in a unit ball: 1.2e15 Msun/h per (Mpc/h)^3 >> DENSITY
    shell = rng.standard_normal((5000, 3))
    shell *= (uniform_r * rng.random(5000) ** (1 / 3) / np.linalg.norm(shell, axis=1))[:, None]
    pos = np.concatenate([core, centre + shell])
    labels = np.concatenate([np.zeros(20, dtype=np.int64), np.full(5000, -1)])
    so = spherical_overdensity(pos, BOX, labels, np.array([20]), m, DENSITY)
    # the uniform ball alone is far above threshold: the sphere ends at its edge, beyond
    # the first-guess radius 1.2 (3 * 20 m / (4 pi DENSITY))^(1/3) = 0.53 Mpc/h
    assert so.mass[0] == pytest.approx(5020 * m, rel=0.01)
    assert so.radius[0] == pytest.approx(uniform_r, rel=0.01)


def test_densest_member_is_the_centre_of_the_tight_clump():
    rng = np.random.default_rng(4)
    loose = rng.random((30, 3)) * 2.0 + 5.0
    tight = np.array([6.0, 6.0, 6.0]) + 0.001 * rng.standard_normal((10, 3))
    pos = np.concatenate([loose, tight, rng.random((200, 3)) * BOX])
    labels = np.concatenate([np.zeros(40, dtype=np.int64), np.full(200, -1)])
    idx = densest_members(cKDTree(np.mod(pos, BOX), boxsize=BOX), pos, labels, 1, k_density=8)
    assert 30 <= idx[0] < 40


def test_no_groups_and_bad_density():
    pos = np.random.default_rng(5).random((50, 3)) * BOX
    so = spherical_overdensity(pos, BOX, np.full(50, -1), np.array([], dtype=np.int64), 1.0, 1.0)
    assert so.mass.shape == (0,) and so.centre.shape == (0, 3)
    with pytest.raises(ValueError, match="density"):
        spherical_overdensity(pos, BOX, np.full(50, -1), np.array([], dtype=np.int64), 1.0, 0.0)


def test_m200c_from_fof_is_the_nfw_conversion_of_m200m():
    from colossus.halo import concentration, mass_defs

    from dm2gal.sim.cosmology import Cosmology
    from dm2gal.sim.so import m200c_from_fof

    cosmo = Cosmology()
    fof = np.array([3e11, 2e12, 1e13, 1e14])
    got = m200c_from_fof(fof, cosmo)
    cosmo.colossus()
    for m, m200 in zip(fof, got, strict=True):
        c = concentration.concentration(m, "200m", 0.0, model="diemer19")
        expected = mass_defs.changeMassDefinition(m, c, 0.0, "200m", "200c")[0]
        assert m200 == pytest.approx(expected, rel=2e-3)
    assert np.all((got > 0.6 * fof) & (got < 0.9 * fof))  # c ~ 5-10: M200c ~ 0.7-0.8 M200m


def test_m200c_keeps_the_grown_mass_where_resolved():
    from dm2gal.sim.cosmology import Cosmology
    from dm2gal.sim.so import SOHalos, m200c, m200c_from_fof

    cosmo = Cosmology()
    so = SOHalos(centre=np.zeros((2, 3)), mass=np.array([5e13, 1e11]), radius=np.array([0.6, 0.1]))
    fof = np.array([8e13, 1e12])
    got = m200c(so, fof, cosmo, min_radius=0.5)
    assert got[0] == 5e13
    assert got[1] == pytest.approx(m200c_from_fof(fof[1:], cosmo)[0], rel=2e-3)
