"""HOD benchmarks: formulas, parameter recovery, no leakage from held-out regions, conservation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_script
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.special import erf

from dm2gal.data.regions import Region
from dm2gal.hod import (
    BinnedHOD,
    DecoratedHOD,
    Zheng07HOD,
    fit_on_stores,
    paint_on_store,
)
from dm2gal.hod.zheng07 import nfw_radius_quantile
from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog, save_catalogs
from dm2gal.io.store import FieldStore

BOX, GRID = 50.0, 16
TRUE = dict(logMmin=11.3, sigma_logM=0.3, logM0=11.8, logM1=13.2, alpha=1.0)
TRUE_SHMR = dict(m10=11.6, n10=0.035, beta10=1.4, gamma10=0.6, scatter=0.2)
TRUE_SAT = dict(sat_a=9.5, sat_b=0.4, sat_scatter=0.3)


def power_law_halos(n: int, seed: int, slope: float = 0.9) -> HaloCatalog:
    """Hosts with dn/dlog10M ~ M^-slope in [1e11, 1e15] Msun/h, uniform in the box."""
    rng = np.random.default_rng(seed)
    lo, hi = 1e11**-slope, 1e15**-slope
    mass = (lo + rng.random(n) * (hi - lo)) ** (-1.0 / slope)
    n_sub = 1 + rng.poisson(mass / 3e11)
    return HaloCatalog(pos=rng.random((n, 3)) * BOX, mass=mass, n_sub=n_sub)


def model_galaxies(model: Zheng07HOD, halos: HaloCatalog, seed: int) -> GalaxyCatalog:
    """Galaxies drawn from the model itself, with host indices and central flags."""
    rng = np.random.default_rng(seed)
    m = halos.mass
    cen = np.flatnonzero(rng.random(len(m)) < model.mean_ncen(m))
    sat = np.repeat(np.arange(len(m)), rng.poisson(model.mean_nsat(m)))
    p = model.params
    log_cen = model.mean_log_mstar(m[cen]) + p["scatter"] * rng.standard_normal(len(cen))
    log_sat = p["sat_a"] + p["sat_b"] * (np.log10(m[sat]) - 12.0)
    log_sat = log_sat + p["sat_scatter"] * rng.standard_normal(len(sat))
    host = np.concatenate([cen, sat])
    pos = halos.pos[host] + np.concatenate(
        [np.zeros((len(cen), 3)), rng.normal(0.0, 0.3, (len(sat), 3))]
    )
    return GalaxyCatalog(
        pos=np.mod(pos, BOX),
        mstar=10.0 ** np.concatenate([log_cen, log_sat]),
        host=host,
        central=np.arange(len(host)) < len(cen),
        host_mass=m[host],
    )


def true_model() -> Zheng07HOD:
    return Zheng07HOD(**TRUE, **TRUE_SHMR, **TRUE_SAT)


def nothing_heldout(pos: np.ndarray) -> np.ndarray:
    return np.zeros(len(pos), dtype=bool)


TEST_REGION = Region(start=(0, 0, 0), size=(8, 8, 8), grid=GRID)


def heldout(pos: np.ndarray) -> np.ndarray:
    return TEST_REGION.contains(pos, BOX, pad=1)


@pytest.fixture(scope="module")
def catalogs() -> tuple[HaloCatalog, GalaxyCatalog]:
    halos = power_law_halos(4000, seed=1)
    return halos, model_galaxies(true_model(), halos, seed=2)


# -- formulas -----------------------------------------------------------------------------------
def test_mean_occupations_equal_zheng07_formulas():
    model = true_model()
    mass = np.logspace(10.5, 15, 60)
    ncen = 0.5 * (1 + erf((np.log10(mass) - 11.3) / 0.3))
    m0, m1 = 10**11.8, 10**13.2
    nsat = np.where(mass > m0, (np.clip(mass - m0, 0, None) / m1) ** 1.0, 0.0)
    assert 0.1 < ncen[10] < 0.9 and nsat[-1] > 10  # the comparison spans both regimes
    np.testing.assert_allclose(model.mean_ncen(mass), ncen, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(model.mean_nsat(mass), nsat, rtol=1e-12, atol=0)
    assert model.mean_nsat(np.array([10**11.7]))[0] == 0.0


def test_mean_stellar_mass_equals_moster13_formula():
    model = true_model()
    mass = np.logspace(10, 15, 30)
    h = 0.704  # halotools' Moster13SmHm: Msun/h in, Moster's h = 0.704 units inside, Msun/h^2 out
    x = mass / h / 10**11.6
    expected = 2 * 0.035 * mass / h / (x**-1.4 + x**0.6) * h**2
    np.testing.assert_allclose(10 ** model.mean_log_mstar(mass), expected, rtol=1e-10)


def test_nfw_radius_quantile_inverts_enclosed_mass():
    u = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    conc = np.array([4.0, 4.0, 7.0, 10.0, 10.0])
    x = nfw_radius_quantile(u, conc)

    def m(y):
        return np.log(1 + y) - y / (1 + y)

    np.testing.assert_allclose(m(x * conc) / m(conc), u, atol=1e-10)
    assert x[0] == pytest.approx(0.0, abs=1e-12) and x[-1] == pytest.approx(1.0, rel=1e-8)


# -- fitting ------------------------------------------------------------------------------------
def test_zheng07_fit_recovers_known_parameters():
    halos = power_law_halos(40000, seed=3)
    galaxies = model_galaxies(true_model(), halos, seed=4)
    fitted = Zheng07HOD().fit(halos, galaxies, nothing_heldout, BOX).fitted_params()
    tol = dict(logMmin=0.05, sigma_logM=0.05, logM0=0.3, logM1=0.1, alpha=0.1)
    tol.update(m10=0.15, beta10=0.15, gamma10=0.1, scatter=0.02, sat_a=0.05, sat_b=0.05)
    tol.update(sat_scatter=0.02)
    truth = {**TRUE, **TRUE_SHMR, **TRUE_SAT}
    for key, t in tol.items():
        assert abs(fitted[key] - truth[key]) < t, (key, fitted[key], truth[key])
    assert fitted["n10"] == pytest.approx(truth["n10"], rel=0.1)


def test_binned_reproduces_training_occupations_when_every_subhalo_is_a_galaxy():
    # mock-like catalogue: every host has a central and n_sub - 1 satellites
    halos = power_law_halos(500, seed=5)
    rng = np.random.default_rng(6)
    host = np.concatenate([np.arange(500), np.repeat(np.arange(500), halos.n_sub - 1)])
    central = np.arange(len(host)) < 500
    offsets = np.where(central[:, None], 0.0, rng.normal(0, 0.2, (len(host), 3)))
    galaxies = GalaxyCatalog(
        pos=np.mod(halos.pos[host] + offsets, BOX),
        mstar=10 ** rng.uniform(8, 11, len(host)),
        host=host,
        central=central,
        host_mass=halos.mass[host],
    )
    hod = BinnedHOD(n_bins=5).fit(halos, galaxies, nothing_heldout, BOX)
    np.testing.assert_array_equal(hod.p_cen_, 1.0)
    np.testing.assert_allclose(hod.sat_ratio_[hod.sat_pool_.count > 0], 1.0)
    pos, mstar = hod.sample(halos, seed=0, box=BOX)
    assert len(mstar) == len(galaxies)  # one central per host, n_sub - 1 satellites each
    # centrals sit at host centres with a mass of a training central of the same bin
    np.testing.assert_allclose(pos[:500], halos.pos % BOX)
    cen_bin = hod._bin(halos.mass)
    pool_bin = hod._bin(galaxies.host_mass[central])
    for b in np.unique(cen_bin):
        assert np.isin(mstar[:500][cen_bin == b], galaxies.mstar[central][pool_bin == b]).all()
    # satellites: (M*, offset) pairs of training satellites
    sat_host = np.repeat(np.arange(500), halos.n_sub - 1)
    off = pos[500:] - halos.pos[sat_host]
    off -= BOX * np.round(off / BOX)
    by_mass = dict(zip(galaxies.mstar[~central].tolist(), offsets[~central], strict=True))
    np.testing.assert_allclose([by_mass[m] for m in mstar[500:].tolist()], off, atol=1e-9)


def test_binned_central_fraction_counts_hosts_without_central():
    halos = HaloCatalog(
        pos=np.random.default_rng(0).random((4, 3)) * BOX,
        mass=np.array([1e12, 1.1e12, 1.2e12, 1.3e12]),
        n_sub=np.ones(4, dtype=int),
    )
    galaxies = GalaxyCatalog(
        pos=halos.pos[[0, 2]], mstar=np.array([1e10, 2e10]), host=np.array([0, 2]),
        central=np.array([True, True]), host_mass=halos.mass[[0, 2]],
    )  # fmt: skip
    hod = BinnedHOD(n_bins=1).fit(halos, galaxies, nothing_heldout, BOX)
    assert hod.p_cen_.tolist() == [0.5]
    n = [len(hod.sample(halos, seed=s, box=BOX)[1]) for s in range(200)]
    assert 1.8 < np.mean(n) < 2.2  # 4 hosts x 0.5


# -- no leakage, conservation, seeding ----------------------------------------------------------
def scramble_heldout(galaxies: GalaxyCatalog, seed: int) -> GalaxyCatalog:
    """Replace every held-out galaxy by different ones (other masses, flags, hosts, positions)."""
    rng = np.random.default_rng(seed)
    keep = ~heldout(galaxies.pos)
    n_new = 300
    new_pos = rng.random((n_new, 3)) * (8 * BOX / GRID)  # inside the test region
    return GalaxyCatalog(
        pos=np.concatenate([galaxies.pos[keep], new_pos]),
        mstar=np.concatenate([galaxies.mstar[keep], 10 ** rng.uniform(9, 12, n_new)]),
        host=np.concatenate([galaxies.host[keep], rng.integers(0, 4000, n_new)]),
        central=np.concatenate([galaxies.central[keep], rng.random(n_new) < 0.5]),
        host_mass=np.concatenate([galaxies.host_mass[keep], 10 ** rng.uniform(11, 15, n_new)]),
    )


@pytest.mark.parametrize("make", [lambda: BinnedHOD(n_bins=8), Zheng07HOD])
def test_heldout_galaxies_do_not_change_the_benchmark(catalogs, make):
    halos, galaxies = catalogs
    assert heldout(galaxies.pos).sum() > 20
    field = make().fit(halos, galaxies, heldout, BOX).paint(halos, GRID, BOX, seed=7)
    other = scramble_heldout(galaxies, seed=8)
    again = make().fit(halos, other, heldout, BOX).paint(halos, GRID, BOX, seed=7)
    np.testing.assert_array_equal(field, again)
    # ... while changing one training galaxy does change it (the test can fail)
    train = np.flatnonzero(~heldout(galaxies.pos) & galaxies.central)
    changed = GalaxyCatalog(**{k: np.copy(v) for k, v in vars(galaxies).items()})
    changed.mstar[train] *= 3.0
    moved = make().fit(halos, changed, heldout, BOX).paint(halos, GRID, BOX, seed=7)
    assert not np.array_equal(field, moved)


@pytest.mark.parametrize("make", [lambda: BinnedHOD(n_bins=8), Zheng07HOD])
def test_painting_conserves_assigned_stellar_mass(catalogs, make):
    halos, galaxies = catalogs
    hod = make().fit(halos, galaxies, heldout, BOX)
    pos, mstar = hod.sample(halos, seed=3, box=BOX)
    assert pos.shape == (len(mstar), 3) and ((pos >= 0) & (pos < BOX)).all()
    assert mstar.sum() > 0
    field = hod.paint(halos, GRID, BOX, seed=3)
    assert field.dtype == np.float32 and field.shape == (GRID,) * 3
    assert field.sum(dtype=np.float64) == pytest.approx(mstar.sum(), rel=1e-5)
    np.testing.assert_array_equal(hod.sample(halos, seed=3, box=BOX)[1], mstar)
    assert not np.array_equal(hod.sample(halos, seed=4, box=BOX)[1], mstar)


def test_zheng07_satellites_lie_within_the_virial_radius(catalogs):
    halos, galaxies = catalogs
    hod = Zheng07HOD().fit(halos, galaxies, heldout, BOX)
    centre = np.full((1, 3), BOX / 2)
    heavy = HaloCatalog(pos=centre, mass=np.array([1e15]), n_sub=np.array([1]))
    r_vir = hod.nfw.halo_mass_to_halo_radius(np.array([1e15]))[0]
    radii = []
    for seed in range(20):
        pos, _ = hod.sample(heavy, seed, BOX)
        radii.append(np.linalg.norm(pos[1:] - centre, axis=1) / r_vir)
    r = np.concatenate(radii)
    assert len(r) > 200 and r.max() <= 1.0 + 1e-9 and 0.2 < np.median(r) < 0.6
    # the mean's fixed satellite points sample the same profile
    pos, mstar = hod.mean(heavy, BOX)
    r_mean = np.linalg.norm(pos[1:] - centre, axis=1) / r_vir
    assert r_mean.max() <= 1.0 + 1e-9 and abs(np.median(r_mean) - np.median(r)) < 0.05


# -- store, configs, bad input ------------------------------------------------------------------
def test_fit_and_paint_on_a_store(tmp_path, catalogs):
    halos, galaxies = catalogs
    store = FieldStore(tmp_path / "store")
    store.init(BOX, GRID)
    hod = BinnedHOD(n_bins=6)
    assert fit_on_stores([hod], [store], heldout) == {}  # no catalogues: no benchmark
    save_catalogs(store.root / "catalogs.h5", halos, galaxies, mass_definition="M200c")
    fitted = fit_on_stores([hod], [store], heldout)
    assert fitted == {"binned": hod} and hod.mass_definition == "M200c"
    painted = paint_on_store(fitted, store, [1, 2])
    assert list(painted) == ["hod_binned_mean", "hod_binned_draw"]
    np.testing.assert_array_equal(painted["hod_binned_mean"][0], hod.paint_mean(halos, GRID, BOX))
    for seed, draw in zip([1, 2], painted["hod_binned_draw"], strict=True):
        np.testing.assert_array_equal(draw, hod.paint(halos, GRID, BOX, seed))
    # a box whose catalogues use another mass definition is refused
    other = FieldStore(tmp_path / "other")
    other.init(BOX, GRID)
    save_catalogs(other.root / "catalogs.h5", halos, galaxies, mass_definition="GroupMass")
    with pytest.raises(ValueError, match="GroupMass.*M200c"):
        paint_on_store(fitted, other, [1])


@pytest.mark.parametrize(
    "name,cls",
    [
        ("binned", BinnedHOD),
        ("binned_env", BinnedHOD),
        ("zheng07", Zheng07HOD),
        ("decorated", DecoratedHOD),
    ],
)
def test_hod_configs_instantiate(name, cls):
    from pathlib import Path

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "hod" / f"{name}.yaml")
    hod = instantiate(cfg)
    assert isinstance(hod, cls) and hod.name == name


def test_bad_inputs_raise_clearly(catalogs):
    halos, galaxies = catalogs
    with pytest.raises(RuntimeError, match="not fitted"):
        BinnedHOD().sample(halos, seed=0, box=BOX)
    with pytest.raises(ValueError, match="n_bins"):
        BinnedHOD(n_bins=0)
    with pytest.raises(ValueError, match="log_mass_edges"):
        BinnedHOD(log_mass_edges=[12.0, 11.0])
    with pytest.raises(ValueError, match="sigma_logM"):
        Zheng07HOD(sigma_logM=0.0)
    with pytest.raises(ValueError, match="is_heldout"):
        BinnedHOD().fit(halos, galaxies, lambda pos: np.zeros(3, dtype=bool), BOX)
    bad = HaloCatalog(pos=halos.pos, mass=-halos.mass, n_sub=halos.n_sub)
    with pytest.raises(ValueError, match="halos.mass"):
        Zheng07HOD().fit(bad, galaxies, heldout, BOX)
    short = GalaxyCatalog(**{**vars(galaxies), "host": galaxies.host[:-1]})
    with pytest.raises(ValueError, match="galaxies.host"):
        BinnedHOD().fit(halos, short, heldout, BOX)
    two_centrals = GalaxyCatalog(**{**vars(galaxies), "central": np.ones(len(galaxies), bool)})
    with pytest.raises(ValueError, match="more than one central"):
        BinnedHOD().fit(halos, two_centrals, nothing_heldout, BOX)
    everything = lambda pos: np.ones(len(pos), dtype=bool)  # noqa: E731
    with pytest.raises(ValueError, match="training"):
        BinnedHOD().fit(halos, galaxies, everything, BOX)
    with pytest.raises(ValueError, match="training"):
        Zheng07HOD().fit(halos, galaxies, everything, BOX)


def test_zheng07_without_training_satellites_warns_and_paints_centrals_only(catalogs):
    halos, galaxies = catalogs
    cen_only = GalaxyCatalog(**{k: v[galaxies.central] for k, v in vars(galaxies).items()})
    with pytest.warns(UserWarning, match="no satellites"):
        hod = Zheng07HOD().fit(halos, cen_only, heldout, BOX)
    np.testing.assert_array_equal(hod.mean_nsat(halos.mass), 0.0)
    pos, mstar = hod.sample(halos, seed=0, box=BOX)
    assert 0 < len(mstar) <= len(halos)


@pytest.mark.slow
def test_cli_builds_and_records_the_field_on_a_tiny_mock(tmp_path):
    from functools import partial

    from dm2gal.train.build import compose_train, data_module_config

    overrides = [f"paths.data_dir={tmp_path}", "seed=5", "experiment=smoke"]
    run_script("dm2gal.hod", "hod=binned", *overrides, cwd=tmp_path)
    (store_dir,) = (tmp_path / "mock").iterdir()
    store = FieldStore(store_dir)
    meta = store.field_meta("hod_binned_draw")
    assert meta["seed"] == 5 and meta["config"]["n_bins"] == 10
    assert len(meta["fitted_params"]["p_cen"]) == 10
    assert "seed" not in store.field_meta("hod_binned_mean")
    # the stored fields are those of the evaluation's fit with the training run's held-out split
    cfg = compose_train(overrides)
    dm = instantiate(data_module_config(cfg.data), context=instantiate(cfg.model).context)
    dm.prepare_data()
    dm.setup("fit")
    fitted = fit_on_stores([BinnedHOD()], [store], partial(dm.splits.is_heldout, box=store.box))
    for name, (field,) in paint_on_store(fitted, store, [5]).items():
        np.testing.assert_array_equal(store.read(name), field)
