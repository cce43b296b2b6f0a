"""Catalogue statistics against references: the stellar-mass function against a count by hand,
xi(r) against a brute-force periodic pair count, the monopole without velocities against xi, an
infall (Kaiser-like squashing) against the same catalogue squashed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dm2gal.paint.statistics import (
    StatBins,
    correlation,
    multipoles,
    rsd_scale,
    stellar_mass_function,
)

BOX = 60.0
BINS = StatBins(r_min=1.0, r_max=15.0, r_bins=6, mass_cut=1e10)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(4)
    centres = rng.uniform(0, BOX, (60, 3))  # clustered: 60 clumps of 20
    offsets = rng.normal(0, 1.5, (1200, 3))
    pos = np.mod(np.repeat(centres, 20, axis=0) + offsets, BOX)
    return pos, 10 ** rng.uniform(9.5, 11.5, len(pos)), offsets


def test_stellar_mass_function_counts(sample):
    _, mstar, _ = sample
    smf = stellar_mass_function(mstar, BOX, BINS)
    edges = BINS.smf_edges()
    assert edges[0] == 9.0 and np.allclose(np.diff(edges), 0.25)
    by_hand = [np.sum((np.log10(mstar) >= a) & (np.log10(mstar) < b)) for a, b in
               zip(edges[:-1], edges[1:], strict=True)]  # fmt: skip
    np.testing.assert_allclose(smf * BOX**3 * 0.25, by_hand)


def test_correlation_against_brute_force_pairs(sample):
    pos, mstar, _ = sample
    keep = pos[mstar > BINS.mass_cut]
    tree = cKDTree(keep, boxsize=BOX)
    edges = BINS.r_edges()
    pairs = np.diff(tree.count_neighbors(tree, edges))  # ordered pairs
    n = len(keep)
    shell = 4 / 3 * np.pi * np.diff(edges**3)
    # halotools' analytic randoms expect n^2 (not n (n - 1)) ordered pairs per unit volume
    expected = pairs / (n * n * shell / BOX**3) - 1
    np.testing.assert_allclose(correlation(pos, mstar, BOX, BINS), expected, rtol=1e-9)


def test_monopole_without_velocities_is_xi_and_needs_velocities(sample):
    pos, mstar, _ = sample
    xi0, xi2 = multipoles(pos, np.zeros_like(pos), mstar, BOX, BINS, rsd_scale(0.0, 0.3))
    np.testing.assert_allclose(xi0, correlation(pos, mstar, BOX, BINS), rtol=1e-3, atol=1e-3)
    assert np.abs(xi2).max() < 0.5 * np.abs(xi0).max()
    vel = np.zeros_like(pos)
    vel[0] = np.nan
    assert multipoles(pos, vel, np.full(len(pos), 1e11), BOX, BINS, 0.01) is None


def test_rsd_scale_is_one_plus_z_over_hubble():
    assert rsd_scale(0.0, 0.3) == pytest.approx(0.01, rel=1e-12)
    assert rsd_scale(1.0, 0.3) == pytest.approx(2.0 / (100.0 * np.sqrt(0.3 * 8 + 0.7)), rel=1e-12)


def test_infall_squashes_clumps_along_the_line_of_sight(sample):
    """Every galaxy falls towards its clump's centre at 100 (1 - q) km/s per Mpc/h of offset:
    at z = 0 its redshift-space offset along z is q times the real one, as if squashed by
    hand (same multipoles), and the squashed clumps give a negative quadrupole and a larger
    small-scale monopole than in real space (the Kaiser effect's sign)."""
    pos, mstar, offsets = sample
    q = 0.5
    vel = -100.0 * (1 - q) * offsets
    xi0, xi2 = multipoles(pos, vel, mstar, BOX, BINS, rsd_scale(0.0, 0.3))
    squashed = pos.copy()
    squashed[:, 2] -= (1 - q) * offsets[:, 2]
    by_hand = multipoles(squashed, np.zeros_like(pos), mstar, BOX, BINS, 0.01)
    np.testing.assert_allclose(xi0, by_hand[0], rtol=1e-6)
    np.testing.assert_allclose(xi2, by_hand[1], rtol=1e-6, atol=1e-9)
    real = correlation(pos, mstar, BOX, BINS)
    assert (xi2[:3] < -0.3 * xi0[:3]).all()
    assert (xi0[:2] > 1.2 * real[:2]).all()
