"""Catalogue statistics against references: the stellar-mass function against a count by hand,
xi(r) against a brute-force periodic pair count, the monopole without velocities against xi."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dm2gal.paint.statistics import StatBins, correlation, multipoles, stellar_mass_function

BOX = 60.0
BINS = StatBins(r_min=1.0, r_max=15.0, r_bins=6, mass_cut=1e10)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(4)
    centres = rng.uniform(0, BOX, (60, 3))  # clustered: 60 clumps of 20
    pos = np.mod(np.repeat(centres, 20, axis=0) + rng.normal(0, 1.5, (1200, 3)), BOX)
    return pos, 10 ** rng.uniform(9.5, 11.5, len(pos))


def test_stellar_mass_function_counts(sample):
    _, mstar = sample
    smf = stellar_mass_function(mstar, BOX, BINS)
    edges = BINS.smf_edges()
    assert edges[0] == 9.0 and np.allclose(np.diff(edges), 0.25)
    by_hand = [np.sum((np.log10(mstar) >= a) & (np.log10(mstar) < b)) for a, b in
               zip(edges[:-1], edges[1:], strict=True)]  # fmt: skip
    np.testing.assert_allclose(smf * BOX**3 * 0.25, by_hand)


def test_correlation_against_brute_force_pairs(sample):
    pos, mstar = sample
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
    pos, mstar = sample
    xi0, xi2 = multipoles(pos, np.zeros_like(pos), mstar, BOX, BINS)
    np.testing.assert_allclose(xi0, correlation(pos, mstar, BOX, BINS), rtol=1e-3, atol=1e-3)
    assert np.abs(xi2).max() < 0.5 * np.abs(xi0).max()
    vel = np.zeros_like(pos)
    vel[0] = np.nan
    assert multipoles(pos, vel, np.full(len(pos), 1e11), BOX, BINS) is None
