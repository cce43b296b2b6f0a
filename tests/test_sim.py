"""Tests of the embedded mock universe: cosmology, 2LPT, PM, FoF, galaxies, physics and cache."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import fft

from dm2gal.io.catalog import load_catalogs
from dm2gal.sim import MockUniverse
from dm2gal.sim.cosmology import Cosmology
from dm2gal.sim.fof import friends_of_friends
from dm2gal.sim.galaxies import (
    GalaxyModel,
    Hosts,
    environment_residual,
    moster13,
    populate,
    smoothed_log_density,
)
from dm2gal.sim.ics import linear_delta_k, wavenumbers
from dm2gal.sim.lpt import lattice, lpt_displacements

TNG = Cosmology()


# -- cosmology ---------------------------------------------------------------------------------
def test_growth_matches_colossus():
    colossus = TNG.colossus()
    for a in (0.1, 0.3, 0.7, 1.0):
        assert TNG.growth(a) == pytest.approx(colossus.growthFactor(1.0 / a - 1.0), rel=2e-3)


def test_fastpm_factors_satisfy_growth_equation():
    # G_f = a^2 E dG_p/da must equal 1.5 Om0 D1 for the growing mode
    for a in (0.1, 0.5, 1.0):
        eps = 1e-5 * a
        dgp = (TNG.momentum_factor(a + eps) - TNG.momentum_factor(a - eps)) / (2 * eps)
        assert a**2 * TNG.E(a) * dgp == pytest.approx(TNG.force_factor(a), rel=1e-6)
    # f1 = dlnD/dlna against a finite difference of colossus' growth factor
    colossus, a, eps = TNG.colossus(), 0.5, 1e-4
    growth = [colossus.growthFactor(1.0 / x - 1.0) for x in (a - eps, a + eps)]
    f_colossus = a * (growth[1] - growth[0]) / (2 * eps) / colossus.growthFactor(1.0 / a - 1.0)
    assert TNG.growth_rate(a) == pytest.approx(f_colossus, rel=2e-3)


def test_bad_cosmology_names_key():
    with pytest.raises(ValueError, match="sigma8"):
        Cosmology(sigma8=-1.0)


# -- initial conditions and 2LPT ---------------------------------------------------------------
def test_initial_power_matches_colossus():
    import Pk_library as PKL

    n, box = 32, 200.0
    delta = fft.irfftn(linear_delta_k(n, box, 7, TNG), s=(n,) * 3).astype(np.float32)
    pk = PKL.Pk(delta, box, 0, "None", 1, False)
    k, p, modes = pk.k3D, pk.Pk[:, 0], pk.Nmodes3D
    sel = (k > 0.1) & (k < np.pi * n / box)  # many modes, below the (zeroed) Nyquist planes
    ratio = np.sum(modes[sel] * p[sel]) / np.sum(modes[sel] * TNG.power_linear(k[sel]))
    assert ratio == pytest.approx(1.0, abs=0.05)


def test_zeldovich_plane_wave_is_exact():
    n, box, amp = 16, 100.0, 0.3
    kw = 2 * np.pi / box * 2
    x = lattice(n, box)
    delta = (amp * np.cos(kw * x[:, 0])).reshape((n,) * 3)
    psi1, psi2 = lpt_displacements(fft.rfftn(delta), box)
    np.testing.assert_allclose(psi1[:, 0], -amp / kw * np.sin(kw * x[:, 0]), atol=1e-10)
    np.testing.assert_allclose(psi1[:, 1:], 0.0, atol=1e-10)
    np.testing.assert_allclose(psi2, 0.0, atol=1e-10)


def test_second_order_displacement_of_crossed_waves():
    n, box, a, b = 16, 100.0, 0.3, 0.2
    kw = 2 * np.pi / box
    x = lattice(n, box)
    cx, cy = np.cos(kw * x[:, 0]), np.cos(kw * x[:, 1])
    delta = (a * cx + b * cy).reshape((n,) * 3)
    _, psi2 = lpt_displacements(fft.rfftn(delta), box)
    # lap phi2 = a b cos(kx) cos(ky)  =>  phi2 = -a b cos(kx) cos(ky) / (2 k^2)
    expect_x = a * b * np.sin(kw * x[:, 0]) * cy / (2 * kw)
    expect_y = a * b * cx * np.sin(kw * x[:, 1]) / (2 * kw)
    np.testing.assert_allclose(psi2[:, 0], expect_x, atol=1e-10)
    np.testing.assert_allclose(psi2[:, 1], expect_y, atol=1e-10)
    np.testing.assert_allclose(psi2[:, 2], 0.0, atol=1e-10)


# -- friends of friends ------------------------------------------------------------------------
def test_fof_hand_built_groups_across_the_edge():
    box = 10.0
    pos = np.array(
        [
            [5.0, 5.0, 5.0],  # group B (3 members)
            [9.9, 1.0, 1.0],  # group A (4 members, across x = 0)
            [5.0, 5.1, 5.0],
            [0.0, 1.0, 1.0],
            [2.0, 8.0, 3.0],  # isolated
            [0.1, 1.0, 1.0],
            [9.95, 9.95, 9.95],  # group C (2 members, across the corner)
            [5.0, 5.2, 5.0],
            [0.02, 0.02, 0.02],
            [0.2, 1.0, 1.0],
            [7.0, 7.0, 7.0],  # too far from its neighbour (0.25 > 0.15)
            [7.25, 7.0, 7.0],
        ]
    )
    groups = friends_of_friends(pos, box, linking_length=0.15, min_members=2)
    np.testing.assert_array_equal(groups.size, [4, 3, 2])
    np.testing.assert_array_equal(groups.labels, [1, 0, 1, 0, -1, 0, 2, 1, 2, 0, -1, -1])
    np.testing.assert_allclose(groups.centre[0], [0.05, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(groups.centre[1], [5.0, 5.1, 5.0], atol=1e-12)
    np.testing.assert_allclose(groups.centre[2], [9.985, 9.985, 9.985], atol=1e-12)
    members = groups.members()
    np.testing.assert_array_equal(members[0], [1, 3, 5, 9])
    np.testing.assert_array_equal(members[2], [6, 8])
    assert len(friends_of_friends(pos, box, 0.15, min_members=4)) == 1


# -- galaxies ----------------------------------------------------------------------------------
def test_moster13_at_characteristic_mass():
    model, h = GalaxyModel(), 0.6774
    m1 = 10**model.log_m1  # Msun; there M*/M = N exactly
    assert moster13(m1 * h, h, model) == pytest.approx(model.norm * m1 * h, rel=1e-12)


def test_populate_environment_and_satellites():
    model, h, n_h, per_halo = GalaxyModel(), 0.6774, 2000, 50
    mass = np.full(n_h, 1e13)
    env = np.where(np.arange(n_h) % 2 == 0, 1.0, -1.0)
    particle_pos = np.zeros((n_h * per_halo, 3))
    particle_pos[:, 0] = np.arange(n_h * per_halo)  # x encodes the particle index
    members = list(np.arange(n_h * per_halo).reshape(n_h, per_halo))
    hosts = Hosts(particle_pos[::per_halo], mass, members, particle_pos, env)
    halos, gals = populate(hosts, 1e11, h, model, np.random.default_rng(1))
    cen = np.log10(gals.mstar[gals.central])
    # environment shifts log M* by +-env_dex at fixed halo mass
    assert cen[env > 0].mean() - cen[env < 0].mean() == pytest.approx(2 * model.env_dex, abs=0.03)
    assert cen.mean() == pytest.approx(np.log10(moster13(1e13, h, model)), abs=0.02)
    mu_min = 1e11 / 1e13
    expected = model.sub_norm / model.sub_slope * (mu_min**-model.sub_slope - 0.1**-model.sub_slope)
    n_sat = halos.n_sub - 1
    assert n_sat.mean() == pytest.approx(expected, abs=5 * np.sqrt(expected / n_h))
    sats = ~gals.central
    assert len(gals) == n_h + n_sat.sum()
    np.testing.assert_array_equal(np.bincount(gals.host[sats], minlength=n_h), n_sat)
    # satellites sit on member particles of their own host
    index = gals.pos[sats, 0].astype(int)
    np.testing.assert_array_equal(particle_pos[index], gals.pos[sats])
    np.testing.assert_array_equal(index // per_halo, gals.host[sats])
    np.testing.assert_array_equal(gals.host_mass, 1e13)


def test_hosts_need_one_entry_per_halo():
    pos, members = np.zeros((3, 3)), [np.arange(2)] * 3
    with pytest.raises(ValueError, match=r"one entry per halo.*'env': 2"):
        Hosts(pos, np.ones(3), members, np.zeros((2, 3)), np.zeros(2))


# -- the mock universe -------------------------------------------------------------------------
TINY = {"box": 32.0, "particles": 16, "grid": 16, "seed": 3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    src = MockUniverse(**TINY, cache_dir=tmp_path_factory.mktemp("tiny"))
    return src, src.build()


def test_tiny_mock_conserves_mass(tiny):
    src, store = tiny
    halos, gals = load_catalogs(src.store_dir / "catalogs.h5")
    assert len(halos) > 0 and len(gals) >= len(halos)
    dm = store.read("dm").sum(dtype=np.float64)
    assert dm == pytest.approx(16**3 * src.particle_mass, rel=1e-5)
    assert src.particle_mass == pytest.approx(0.3089 * 2.775e11 * 2.0**3, rel=1e-12)
    assert store.read("subhalo").sum(dtype=np.float64) == pytest.approx(halos.mass.sum(), rel=1e-5)
    assert store.read("stellar").sum(dtype=np.float64) == pytest.approx(gals.mstar.sum(), rel=1e-5)
    assert np.all(halos.mass > 0)
    np.testing.assert_array_equal(np.bincount(gals.host, minlength=len(halos)), halos.n_sub)
    assert store.meta()["attrs"]["source"] == "mock" and store.meta()["attrs"]["seed"] == 3


def test_same_seed_same_fields_other_seed_differs(tiny, tmp_path):
    _, store = tiny
    again = MockUniverse(**TINY, cache_dir=tmp_path / "a").build()
    for name in ("dm", "subhalo", "stellar"):
        np.testing.assert_array_equal(again.read(name), store.read(name))
    other = MockUniverse(**{**TINY, "seed": 4}, cache_dir=tmp_path / "b")
    assert other.store_dir.name != MockUniverse(**TINY).store_dir.name
    assert not np.array_equal(other.build().read("dm"), store.read("dm"))


def test_cache_is_reused(tiny, monkeypatch):
    src, _ = tiny

    def fail(self, root):
        raise AssertionError("regenerated although the cache is intact")

    monkeypatch.setattr(MockUniverse, "_generate", fail)
    store = MockUniverse(**TINY, cache_dir=src.cache_dir).build()
    assert store.root == src.store_dir
    assert store.fields() == ["dm", "oracle_draw", "oracle_mean", "stellar", "subhalo"]


@pytest.mark.parametrize("damage", ["flip_byte", "drop_catalogs", "drop_field", "wrong_hash"])
def test_corrupted_cache_is_rebuilt_with_warning(tmp_path, damage):
    src = MockUniverse(**TINY, cache_dir=tmp_path)
    good = src.build().read("dm", mmap=False)
    root = src.store_dir
    if damage == "flip_byte":
        raw = bytearray((root / "dm.npy").read_bytes())
        raw[-5] ^= 0xFF
        (root / "dm.npy").write_bytes(bytes(raw))
    elif damage == "drop_catalogs":
        (root / "catalogs.h5").unlink()
    elif damage == "drop_field":
        (root / "stellar.npy").unlink()
    else:
        meta = (root / "meta.json").read_text().replace(src.hash, "0" * 16)
        (root / "meta.json").write_text(meta)
    assert src.cache_problem() is not None
    with pytest.warns(UserWarning, match="unusable"):
        store = src.build()
    assert src.cache_problem() is None
    np.testing.assert_array_equal(store.read("dm"), good)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.hash]  # no temporary leftovers


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("box", -1.0),
        ("box", 0.0),
        ("particles", 1),
        ("particles", 8.5),
        ("particles", "16"),
        ("box", float("nan")),
        ("box", "75"),
        ("grid", 0),
        ("seed", -2),
        ("steps", 0),
        ("linking_b", 1.5),
        ("min_halo_particles", 1),
    ],
)
def test_bad_arguments_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        MockUniverse(**{**TINY, key: value})


def test_bad_physics_dicts_name_the_key():
    with pytest.raises(ValueError, match="cosmology"):
        MockUniverse(**TINY, cosmology={"Om0": 2.0})
    with pytest.raises(ValueError, match="galaxies"):
        MockUniverse(**TINY, galaxies={"no_such_knob": 1.0})


# -- physics checks ----------------------------------------------------------------------------
def test_power_spectrum_follows_linear_theory_on_large_scales(tmp_path):
    """32^3 particles in a 256 Mpc/h box: k < 0.07 h/Mpc is linear at z=0.

    Linear theory of the same realisation (the seed's ICs scaled to z=0) removes cosmic
    variance; the nonlinear propagator damping exp(-k^2 sigma_v^2 / 2) stays below 10% there.
    """
    import Pk_library as PKL

    src = MockUniverse(box=256.0, particles=32, grid=32, seed=5, cache_dir=tmp_path)
    dm = src.build().read("dm", mmap=False)
    delta = (dm / dm.mean() - 1.0).astype(np.float32)
    final = PKL.Pk(delta, src.box, 0, "CIC", 1, False)
    linear = PKL.Pk(src.linear_density(), src.box, 0, "None", 1, False)
    np.testing.assert_allclose(final.k3D, linear.k3D, rtol=1e-6)
    large = final.k3D < 0.07
    assert large.sum() == 2
    np.testing.assert_allclose(final.Pk[large, 0] / linear.Pk[large, 0], 1.0, atol=0.1)
    # non-linear growth adds power on small scales
    assert final.Pk[-5:, 0].sum() > 1.3 * linear.Pk[-5:, 0].sum()


@pytest.fixture(scope="module")
def mock64(tmp_path_factory):
    """64^3 particles in a 64 Mpc/h box: particle mass 8.6e10 Msun/h, ~650 halos >= 20 particles."""
    src = MockUniverse(
        box=64.0, particles=64, grid=64, seed=11, cache_dir=tmp_path_factory.mktemp("m")
    )
    return src, src.build()


def cumulative_counts(src: MockUniverse, mass: np.ndarray, mdef: str, model: str) -> list:
    """``(found, expected)`` halo counts above 30-200 particle masses against colossus."""
    from colossus.lss import mass_function

    TNG.colossus()
    grid = np.geomspace(10 * src.particle_mass, 1e16, 400)
    dndlnm = mass_function.massFunction(grid, 0.0, mdef=mdef, model=model, q_out="dndlnM")
    out = []
    for n_min in (30, 50, 100, 200):
        sel = grid >= n_min * src.particle_mass
        expected = np.trapezoid(dndlnm[sel], np.log(grid[sel])) * src.box**3
        out.append((np.sum(mass >= n_min * src.particle_mass), expected))
    return out


@pytest.mark.slow
def test_halo_mass_functions_match_watson13_fof_and_tinker08_m200c(mock64):
    """Cumulative counts above 30-200 particles: FoF within 20% of Watson+13 FoF, the
    catalogue's M200c within 20% of Tinker+08 (Delta = 200 critical)."""
    src, _ = mock64
    halos, _ = load_catalogs(src.store_dir / "catalogs.h5")
    fof = friends_of_friends(src.simulate(), src.box, 0.2 * src.box / src.particles, 20)
    for found, expected in cumulative_counts(src, fof.size * src.particle_mass, "fof", "watson13"):
        assert expected > 50
        assert found == pytest.approx(expected, rel=0.2), (found, expected)
    for found, expected in cumulative_counts(src, halos.mass, "200c", "tinker08"):
        assert expected > 50
        assert found == pytest.approx(expected, rel=0.2), (found, expected)


@pytest.mark.slow
def test_central_stellar_mass_depends_on_environment_beyond_halo_mass(mock64):
    src, store = mock64
    halos, gals = load_catalogs(src.store_dir / "catalogs.h5")
    model, cen = src.galaxy_model, gals.central
    log_env = smoothed_log_density(
        store.read("dm", mmap=False), src.box, model.env_radius, halos.pos
    )
    env = environment_residual(np.log10(halos.mass), log_env, model)
    resid = np.log10(gals.mstar[cen] / moster13(gals.host_mass[cen], src.cosmo.h, model))
    spread = model.env_dex * env[gals.host[cen]].std()  # dex of log M* from the environment
    expected = spread / np.hypot(spread, model.scatter_dex)
    assert np.corrcoef(env[gals.host[cen]], resid)[0, 1] == pytest.approx(expected, abs=0.1)
    # at fixed mass the model's relation is the box's: residuals about it are centred, their
    # scatter near env_std (at 64^3 / 32 Mpc/h: a smaller box, a finer grid than the fit's)
    assert abs(env.mean()) < 0.5 and 0.6 < env.std() < 1.4


def test_environment_term_is_local():
    """A halo's environment residual follows the model's fixed relation (hand computation) and
    does not depend on the other halos of the box."""
    model = GalaxyModel(env_pivot=0.4, env_slope=0.2, env_std=0.3)
    log_mass = np.array([11.5, 12.5, 13.5, 14.0])
    log_env = np.array([0.3, 0.4, 0.9, 0.5])
    expected = (log_env - 0.4 - 0.2 * (log_mass - 12.5)) / 0.3
    np.testing.assert_allclose(environment_residual(log_mass, log_env, model), expected)
    np.testing.assert_allclose(environment_residual(log_mass[2:], log_env[2:], model), expected[2:])
    with pytest.raises(ValueError, match="env_std"):
        GalaxyModel(env_std=0.0)


# -- settings of the gravity solver ------------------------------------------------------------
def test_fixed_amplitude_and_phase_flip_ics():
    n, box = 16, 100.0
    plain = linear_delta_k(n, box, 9, TNG)
    fixed = linear_delta_k(n, box, 9, TNG, fixed_amplitude=True)
    flipped = linear_delta_k(n, box, 9, TNG, fixed_amplitude=True, phase_flip=True)
    nonzero = np.abs(plain) > 0
    # |delta_k|^2 = P N^6 / L^3 for every mode; the phases are those of the seed
    ratio = np.abs(fixed[nonzero]) / np.abs(plain[nonzero])
    expected = np.abs(fixed[nonzero]) ** 2 * box**3 / n**6
    kx, ky, kz = wavenumbers(n, box)
    kmag = np.broadcast_to(np.sqrt(kx**2 + ky**2 + kz**2), plain.shape)[nonzero]
    np.testing.assert_allclose(expected, TNG.power_linear(kmag), rtol=1e-6)
    np.testing.assert_allclose(fixed[nonzero], plain[nonzero] * ratio, rtol=1e-6)
    np.testing.assert_array_equal(flipped, -fixed)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("steps", 10),
        ("pgd", False),
        ("fixed_amplitude", True),
        ("phase_flip", True),
        ("z_init", 19.0),
        ("linking_b", 0.17),
    ],
)
def test_every_data_setting_changes_the_cache_hash(key, value):
    base = MockUniverse(**TINY)
    other = MockUniverse(**{**TINY, key: value})
    assert other.config[key] == value and base.config[key] != value
    assert other.hash != base.hash


def test_changed_setting_builds_a_new_mock_next_to_the_cached_one(tiny, monkeypatch):
    src, store = tiny
    calls = []
    generate = MockUniverse._generate

    def counted(self, root):
        calls.append(self.hash)
        generate(self, root)

    monkeypatch.setattr(MockUniverse, "_generate", counted)
    other = MockUniverse(**TINY, pgd=False, cache_dir=src.cache_dir)
    fresh = other.build()
    assert calls == [other.hash] and fresh.root != store.root
    assert not np.array_equal(fresh.read("dm"), store.read("dm"))
    MockUniverse(**TINY, cache_dir=src.cache_dir).build()  # the original is still cached
    assert calls == [other.hash]


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"pm_factor": 3}, "pm_factor"),
        ({"pm_factor": 4}, "4x mesh is calibrated for 40 to 40 steps, got 20"),
        ({"steps": 100}, "steps"),
        ({"fixed_amplitude": "yes"}, "fixed_amplitude"),
        ({"pgd": 1}, "pgd"),
    ],
)
def test_bad_gravity_settings_name_the_key(settings, match):
    with pytest.raises(ValueError, match=match):
        MockUniverse(**TINY, **settings)


def test_pgd_on_a_4x_mesh_is_the_calibrated_higher_accuracy_setting():
    src = MockUniverse(**TINY, steps=40, pm_factor=4)
    assert src.config["pgd"] and src.hash != MockUniverse(**TINY, steps=40).hash


def test_pgd_off_allows_any_steps_and_mesh():
    src = MockUniverse(**TINY, steps=100, pm_factor=3, pgd=False)
    assert src.config["steps"] == 100 and src.config["pm_factor"] == 3
