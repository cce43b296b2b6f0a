"""An HOD keeps the stellar mass of a simulation whose two halo-mass columns differ: hosts and
galaxies are binned by one definition (the catalogues record it), read through the real
TNG-layout readers."""

from __future__ import annotations

import numpy as np
import pytest
from tng_layout import write_groups, write_snapshot

from dm2gal.hod import BinnedHOD, Zheng07HOD, fit_on_stores, paint_on_store
from dm2gal.io.catalog import load_catalogs
from dm2gal.io.sources import TNGSource

BOX_KPC, GRID, N_HALOS = 20_000.0, 16, 400
SHMR = dict(m10=11.6, n10=0.035, beta10=1.4, gamma10=0.6)
FOF_OVER_M200 = 1.18  # TNG: the FoF mass of a host is ~1.2 of its M200c


def nothing_heldout(pos: np.ndarray) -> np.ndarray:
    return np.zeros(len(pos), dtype=bool)


def write_twins(root, seed: int = 0) -> np.ndarray:
    """A gravity-only run and its hydro twin with the same hosts (one central each, no
    satellites), ``GroupMass = 1.18 Group_M_Crit200`` on both sides, and central stellar
    masses exactly the Moster+13 relation (``SHMR``) of M200c. Returns the stellar masses."""
    rng = np.random.default_rng(seed)
    m200 = 10.0 ** rng.uniform(11.0, 14.0, N_HALOS)
    pos = rng.uniform(0, BOX_KPC, (N_HALOS, 3)).astype(np.float32)
    shmr = Zheng07HOD(**SHMR)
    mstar = 10.0 ** shmr.mean_log_mstar(m200)
    one = np.ones(N_HALOS, np.int32)
    groups = {
        "GroupPos": pos,
        "GroupMass": (FOF_OVER_M200 * m200 / 1e10).astype(np.float32),
        "Group_M_Crit200": (m200 / 1e10).astype(np.float32),
        "GroupNsubs": one,
        "GroupFirstSub": np.arange(N_HALOS, dtype=np.int32),
    }
    for run, stellar in (("TNG100-1-Dark", 0.0), ("TNG100-1", 1.0)):
        mtype = np.zeros((N_HALOS, 6), np.float32)
        mtype[:, 1] = m200 / 1e10
        mtype[:, 4] = stellar * mstar / 1e10
        subhalos = {
            "SubhaloPos": pos,
            "SubhaloMass": mtype.sum(axis=1),
            "SubhaloMassType": mtype,
            "SubhaloGrNr": np.arange(N_HALOS, dtype=np.int32),
            "SubhaloFlag": one.astype(np.uint8),
        }
        out = root / run / "output"
        write_groups(out, 99, groups, subhalos, box_kpc=BOX_KPC)
        dm = {1: {"Coordinates": rng.uniform(0, BOX_KPC, (2000, 3))}}
        write_snapshot(out, 99, dm, box_kpc=BOX_KPC, mass_table=[0, 0.05, 0, 0, 0, 0])
    return (mstar / 1e10).astype(np.float32).astype(np.float64) * 1e10


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    mstar = write_twins(root)
    store = TNGSource(root, grid=GRID, store_dir=root / "store", progress=False).build()
    return store, mstar


def test_binned_hod_keeps_the_mass_exactly(twins):
    store, mstar = twins
    halos, galaxies = load_catalogs(store.root / "catalogs.h5")
    # the hydro hosts' mass is read in the gravity-only hosts' definition
    np.testing.assert_allclose(np.sort(galaxies.host_mass), np.sort(halos.mass))
    fitted = fit_on_stores([BinnedHOD()], [store], nothing_heldout)
    painted = paint_on_store(fitted, store, seeds=range(5))
    # every host has one central in its own bin: the mean's total is the truth's, the draws'
    # is within the spread of M* inside a bin
    np.testing.assert_allclose(painted["hod_binned_mean"][0].sum(), mstar.sum(), rtol=1e-5)
    totals = [draw.sum() / mstar.sum() for draw in painted["hod_binned_draw"]]
    assert abs(np.mean(totals) - 1.0) < 0.05


def test_binned_hod_with_the_fof_mass_on_one_side_would_lose_mass(twins):
    """The defect this guards against: galaxies binned by GroupMass, hosts by M200c."""
    store, mstar = twins
    halos, galaxies = load_catalogs(store.root / "catalogs.h5")
    galaxies.host_mass = galaxies.host_mass * FOF_OVER_M200
    hod = BinnedHOD().fit(halos, galaxies, nothing_heldout, store.box)
    lost = hod.paint_mean(halos, GRID, store.box).sum() / mstar.sum() - 1.0
    assert lost < -0.05


def test_zheng07_keeps_the_mass(twins):
    store, mstar = twins
    with pytest.warns(UserWarning, match="no satellites"):
        fitted = fit_on_stores([Zheng07HOD()], [store], nothing_heldout)
    hod = fitted["zheng07"]
    assert hod.params["scatter"] < 1e-3  # the SHMR is recovered exactly
    painted = paint_on_store(fitted, store, seeds=[0])
    np.testing.assert_allclose(painted["hod_zheng07_mean"][0].sum(), mstar.sum(), rtol=0.01)
    np.testing.assert_allclose(painted["hod_zheng07_draw"][0].sum(), mstar.sum(), rtol=0.02)
