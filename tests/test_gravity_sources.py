"""Gravity-only sources (sim=tng, gadget, abacus, mock): fields against Pylians and the files,
tracers against a brute-force M200c and the catalogues, the mock copied bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import MAS_library as masl
import numpy as np
import pytest
from tng_layout import make_pair

from dm2gal.io.gadget import SimFileError, Snapshot
from dm2gal.io.gravity_fields import TRACERS_FILE, Tracers
from dm2gal.io.sources import SourceError, TNGSource
from dm2gal.io.store import FieldStore
from dm2gal.paint.sources import AbacusSource, GadgetSource, MockSource
from dm2gal.sim import MockUniverse
from dm2gal.sim.cosmology import RHO_CRIT
from dm2gal.sim.fof import friends_of_friends

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
GADGET4 = "gadget4_lcdm_gas_32cube_L50_z0.hdf5"
ABACUS = REAL / "abacus" / "Mini_N64_L32"
real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real fixtures absent: {REAL}")


def _pylians(pos, mass, box, grid):
    out = np.zeros((grid,) * 3, np.float32)
    w = np.broadcast_to(np.asarray(mass, np.float32), (len(pos),)).copy()
    masl.MA(np.mod(pos, box).astype(np.float32), out, box, "CIC", W=w, verbose=False)
    return out


@real
def test_gadget4_file_with_own_fof(tmp_path):
    source = GadgetSource(
        REAL, 0, tmp_path / "store", file=GADGET4, subhalo_mass="M200c", progress=False
    )
    info = source.info()
    assert (info.box, info.omega_m, info.h, info.halo_catalog) == (50.0, 0.3, 0.7, "own_fof")
    store = source.with_grid(16).build()
    snap = Snapshot([REAL / GADGET4])
    pos = np.concatenate([c.pos for c in snap.particles(1)])
    m_p = float(snap.mass_table[1])
    assert info.particle_mass == m_p
    np.testing.assert_allclose(store.read("dm"), _pylians(pos, m_p, 50.0, 16), rtol=1e-6)
    tracers = Tracers.load(store.root / TRACERS_FILE)
    np.testing.assert_allclose(
        store.read("subhalo"), _pylians(tracers.pos, tracers.mass, 50.0, 16), rtol=1e-6
    )
    # the largest halo: M200c is the mass inside the radius where the mean density is 200
    # rho_crit (brute force over all particles, periodic), to within a particle or two
    big = np.argmax(tracers.mass)
    radius = (3 * tracers.mass[big] / (4 * np.pi * 200 * RHO_CRIT)) ** (1 / 3)
    d = pos - tracers.pos[big]
    d -= 50.0 * np.round(d / 50.0)
    inside = np.sum(np.sum(d**2, axis=1) <= radius**2)
    assert abs(inside * m_p - tracers.mass[big]) <= 2 * m_p
    # velocities: FoF members' mean (a = 1: file velocities are peculiar ones)
    groups = friends_of_friends(pos, 50.0, 0.2 * 50.0 / 32, min_members=20)
    with h5py.File(REAL / GADGET4) as f:
        vel = f["PartType1/Velocities"][()].astype(np.float64)
    assert len(tracers) == len(groups)
    np.testing.assert_allclose(tracers.vel[0], vel[groups.labels == 0].mean(axis=0), rtol=1e-10)


@real
def test_abacus_test_run(tmp_path):
    pytest.importorskip("abacusnbody", reason="the abacus extra (abacusutils) is not installed")
    from abacusnbody.data.compaso_halo_catalog import CompaSOHaloCatalog
    from abacusnbody.data.read_abacus import read_asdf

    source = AbacusSource(ABACUS, tmp_path / "store", subhalo_mass="N", progress=False)
    info = source.info()
    assert (info.box, info.omega_m, info.h) == (32.0, 0.315192, 0.6736)
    assert info.particle_mass == pytest.approx(1.088e10, rel=1e-3)
    store = source.with_grid(16).build()
    files = sorted((ABACUS / "slices" / "z0.000").glob("*_pack9/*.asdf"))
    pos = np.concatenate([np.asarray(read_asdf(str(f), load=("pos",))["pos"]) for f in files])
    assert len(pos) == 64**3  # field + L0 slices: every particle once
    dm = store.read("dm")
    assert dm.sum(dtype=np.float64) == pytest.approx(64**3 * info.particle_mass, rel=1e-5)
    ref = _pylians(pos + 16.0, info.particle_mass, 32.0, 16)
    np.testing.assert_allclose(dm, ref, rtol=1e-5)
    halos = CompaSOHaloCatalog(str(ABACUS / "halos" / "z0.000"), fields=["N", "x_L2com"]).halos
    n = np.asarray(halos["N"], dtype=np.float64)
    keep = n > 0
    expected = _pylians(np.asarray(halos["x_L2com"])[keep] + 16.0, n[keep] * 1.0882397390e10,
                        32.0, 16)  # fmt: skip
    np.testing.assert_allclose(store.read("subhalo"), expected, rtol=1e-5)
    assert len(Tracers.load(store.root / TRACERS_FILE)) == keep.sum()


def test_tng_dark_run_gives_the_training_sources_gravity_fields(tmp_path):
    pair = make_pair(tmp_path)
    for path in sorted((pair.dark_dir / "groups_099").glob("*.hdf5")):
        with h5py.File(path, "a") as f:
            if "SubhaloPos" in f["Subhalo"]:
                n = len(f["Subhalo/SubhaloPos"])
                f["Subhalo"].create_dataset("SubhaloVel", data=np.full((n, 3), 7.0, np.float32))
    options = {"subhalo_mass": "SubhaloMass", "subhalo_min_mass": 1e11, "progress": False}
    training = TNGSource(tmp_path, grid=16, store_dir=tmp_path / "train", **options).build()
    source = GadgetSource(
        tmp_path, 99, tmp_path / "paint", run="TNG100-1-Dark", output="output", **options
    )
    assert source.info().halo_catalog == "subfind"
    store = source.with_grid(16).build()
    for name in ("dm", "subhalo"):
        np.testing.assert_array_equal(store.read(name), training.read(name))
    tracers = Tracers.load(store.root / TRACERS_FILE)
    assert (tracers.mass >= 1e11).all() and (tracers.vel == 7.0).all()
    recipe = TNGSource(tmp_path, grid=16, store_dir=tmp_path / "train", **options).recipe(
        training, ["dm", "subhalo"]
    )
    assert (recipe.fields.subhalo_mass, recipe.fields.subhalo_min_mass) == ("SubhaloMass", 1e11)
    assert recipe.sim == source.info() and recipe.voxel_size == pair.box / 16
    shutil.rmtree(pair.dark_dir / "groups_099")
    layout = {"run": "TNG100-1-Dark", "output": "output"}
    with pytest.raises(SimFileError, match="fof_subhalo_tab_099"):
        GadgetSource(tmp_path, 99, tmp_path / "x", halos="catalog", **layout).info()
    assert GadgetSource(tmp_path, 99, tmp_path / "x", **layout).info().halo_catalog == "own_fof"


def test_mock_gravity_output_is_copied_bit_for_bit(tmp_path):
    mock = MockUniverse(box=32.0, particles=16, grid=16, seed=3, cache_dir=tmp_path, steps=5)
    built = mock.build()
    source = MockSource(built.root, tmp_path / "paint", subhalo_mass="M200c", progress=False)
    info = source.info()
    assert (info.box, info.redshift, info.halo_catalog) == (32.0, 0.0, "own_fof")
    assert info.particle_mass == pytest.approx(mock.particle_mass)
    store = source.with_grid(16).build()
    for name in ("dm", "subhalo"):
        assert store.field_meta(name)["hash"] == built.field_meta(name)["hash"]
    assert "stellar" not in store.fields()
    with pytest.raises(SourceError, match="cannot give CIC on 32"):
        source.with_grid(32).build()
    assert FieldStore(tmp_path / "paint").grid == 16  # the failed build left the store as it was
