"""Field sources on fake TNG / CAMELS runs: every field checked against its inputs and Pylians."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import MAS_library as masl
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tng_layout import make_pair

import dm2gal.train.build  # noqa: F401  (config resolvers)
from dm2gal.io.catalog import load_catalogs, mass_definition
from dm2gal.io.gadget import SimFileError
from dm2gal.io.sources import ArraySource, CamelsSource, SourceError, TNGSource

GRID = 16
CONF = Path(__file__).resolve().parents[1] / "conf"


def _pylians(pos, mass, box, grid=GRID):
    out = np.zeros((grid,) * 3, np.float32)
    w = np.broadcast_to(np.asarray(mass, np.float32), (len(pos),)).copy()
    masl.MA(np.mod(pos, box).astype(np.float32), out, box, "CIC", W=w, verbose=False)
    return out


def _check(field, pos, mass, box):
    total = float(np.sum(np.broadcast_to(mass, (len(pos),)), dtype=np.float64))
    assert field.sum(dtype=np.float64) == pytest.approx(total, rel=1e-6)
    ref = _pylians(pos, mass, box)
    np.testing.assert_allclose(field, ref, rtol=1e-5, atol=1e-6 * ref.max())


def _source(pair, tmp_path, **options):
    return TNGSource(tmp_path, grid=GRID, store_dir=tmp_path / "store", progress=False,
                     chunk_rows=700, **options)  # fmt: skip


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def test_tng_fields_and_catalogues(pair, tmp_path):
    store = _source(pair, tmp_path, box=10.0).build()
    assert store.grid == GRID and store.box == pytest.approx(pair.box)
    _check(store.read("dm"), pair.dm_pos, pair.dm_mass, pair.box)
    _check(store.read("subhalo"), pair.dark_sub_pos, pair.dark_sub_mass, pair.box)
    has = pair.hydro_sub_mstar > 0
    _check(store.read("stellar"), pair.hydro_sub_pos[has], pair.hydro_sub_mstar[has], pair.box)
    attrs = store.meta()["attrs"]
    assert attrs["mas"] == "CIC" and attrs["units"]["pos"] == "Mpc/h"
    assert attrs["header"]["dark"]["box"] == pytest.approx(10.0)
    assert len(attrs["files"]) == 9 and store.verify() == []  # no hydro snapshot needed

    path = store.root / "catalogs.h5"
    halos, gals = load_catalogs(path)
    assert mass_definition(path) == "Group_M_Crit200"
    g = pair.dark_groups
    kept = g["GroupNsubs"] > 0  # a host without subhalos has no central to place
    assert 0 < kept.sum() < len(kept)
    np.testing.assert_allclose(halos.pos, g["GroupPos"][kept].astype(np.float64) / 1e3, atol=1e-9)
    np.testing.assert_allclose(halos.mass, g["Group_M_Crit200"][kept].astype(np.float64) * 1e10)
    np.testing.assert_array_equal(halos.n_sub, g["GroupNsubs"][kept])
    assert len(gals) == has.sum()
    host = pair.hydro_sub_grnr[has]
    np.testing.assert_array_equal(gals.host, host)
    np.testing.assert_array_equal(gals.central, np.flatnonzero(has) == pair.hydro_first_sub[host])
    assert 0 < gals.central.sum() < len(gals)
    # the hosts' mass is the gravity-only hosts' definition (M200c), not the FoF GroupMass
    np.testing.assert_allclose(gals.host_mass, pair.hydro_group_m200[host])
    assert not np.allclose(gals.host_mass, pair.hydro_group_mass[host])
    np.testing.assert_allclose(gals.mstar, pair.hydro_sub_mstar[has])


def test_star_particles_options(pair, tmp_path):
    store = _source(pair, tmp_path, stellar="particles", subhalo_min_mass=3e11,
                    subhalo_mass="SubhaloMassType[1]", drop_flagged=True).build()  # fmt: skip
    keep = ~pair.star_wind
    _check(store.read("stellar"), pair.star_pos[keep], pair.star_mass[keep], pair.box)
    big = pair.dark_sub_mass >= 3e11
    assert 0 < big.sum() < len(big)
    _check(store.read("subhalo"), pair.dark_sub_pos[big], pair.dark_sub_mass[big], pair.box)
    _, gals = load_catalogs(store.root / "catalogs.h5")
    assert len(gals) == ((pair.hydro_sub_mstar > 0) & (pair.hydro_sub_flag != 0)).sum()


def test_reuse_and_rebuild(pair, tmp_path):
    source = _source(pair, tmp_path)
    store = source.build()
    stamp = store.path("dm").stat().st_mtime_ns
    assert source.build().path("dm").stat().st_mtime_ns == stamp  # reused
    before = store.read("subhalo").sum(dtype=np.float64)
    bigger = _source(pair, tmp_path, subhalo_min_mass=1e12)  # a new option rebuilds
    assert bigger.build().read("subhalo").sum(dtype=np.float64) < before
    regrid = TNGSource(tmp_path, grid=8, store_dir=tmp_path / "store", progress=False)
    assert regrid.build().grid == 8
    stamp = store.path("dm").stat().st_mtime_ns
    with h5py.File(pair.dark_dir / "snapdir_099" / "snap_099.0.hdf5", "a") as f:
        f["PartType1/Coordinates"][0] = [1.0, 1.0, 1.0]  # the source changed: rebuild
    assert regrid.build().path("dm").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_camels_layout(tmp_path):
    pair = make_pair(tmp_path, layout="camels", snapshot=90, box_kpc=25_000.0)
    source = CamelsSource(tmp_path / "IllustrisTNG" / "LH_0", grid=GRID, box=25.0,
                          store_dir=tmp_path / "store", progress=False)  # fmt: skip
    assert source.dark_dir == pair.dark_dir
    store = source.build()
    assert store.box == pytest.approx(25.0)
    _check(store.read("dm"), pair.dm_pos, pair.dm_mass, pair.box)


def test_array_source(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("dm", "subhalo", "stellar"):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], rng.uniform(0, 1e10, (GRID,) * 3))
    store = ArraySource(**paths, box=5.0, store_dir=tmp_path / "store").build()
    assert store.box == 5.0 and store.grid == GRID
    np.testing.assert_allclose(store.read("stellar"), np.load(paths["stellar"]), rtol=1e-7)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((GRID, GRID, GRID + 1)))
    with pytest.raises(SourceError, match=r"bad\.npy: shape \(16, 16, 17\), expected a cube"):
        ArraySource(paths["dm"], bad, paths["stellar"], 5.0, tmp_path / "other").build()
    with pytest.raises(SourceError, match="option 'grid' = 32 but the arrays are 16"):
        ArraySource(**paths, box=5.0, store_dir=tmp_path / "other", grid=32).build()
    assert not (tmp_path / "other").exists()


# -- bad input: one clear error naming the file and the key, nothing written ------------------
def _edit_attr(paths, key, value):
    for path in paths:
        with h5py.File(path, "a") as f:
            f["Header"].attrs[key] = value


def _nan(pair):
    with h5py.File(pair.dark_dir / "snapdir_099" / "snap_099.2.hdf5", "a") as f:
        f["PartType1/Coordinates"][3] = [np.inf, 0, 0]


def _truncate(pair):
    path = pair.dark_dir / "groups_099" / "fof_subhalo_tab_099.2.hdf5"
    path.write_bytes(path.read_bytes()[:1000])


def _no_dataset(pair):
    with h5py.File(pair.hydro_dir / "groups_099" / "fof_subhalo_tab_099.0.hdf5", "a") as f:
        del f["Subhalo/SubhaloMassType"]


def _no_header_key(pair):
    with h5py.File(pair.hydro_dir / "groups_099" / "fof_subhalo_tab_099.0.hdf5", "a") as f:
        del f["Header"].attrs["Redshift"]


def _hydro_cosmology(pair):
    _edit_attr((pair.hydro_dir / "groups_099").iterdir(), "Omega0", 0.25)


def _catalogue_box(pair):
    _edit_attr((pair.dark_dir / "groups_099").iterdir(), "BoxSize", 20_000.0)


def _chunk_box(pair):
    _edit_attr([pair.hydro_dir / "groups_099" / "fof_subhalo_tab_099.1.hdf5"], "BoxSize", 2e4)


BAD = {
    "missing_dir": (
        lambda p: __import__("shutil").rmtree(p.hydro_dir),
        r"TNG100-1/output: no such",
    ),
    "missing_chunk": (
        lambda p: (p.dark_dir / "snapdir_099" / "snap_099.1.hdf5").unlink(),
        r"snap_099\.1\.hdf5: missing chunk file",
    ),
    "truncated": (_truncate, r"fof_subhalo_tab_099\.2\.hdf5: not a readable HDF5 file"),
    "no_dataset": (_no_dataset, r"fof_subhalo_tab_099\.0\.hdf5: missing dataset 'Subhalo/Subh"),
    "no_header_key": (
        _no_header_key,
        r"fof_subhalo_tab_099\.0\.hdf5: missing header key 'Header/Red",
    ),
    "non_finite": (_nan, r"snap_099\.2\.hdf5: 'PartType1/Coordinates' has non-finite"),
    "dark_vs_hydro": (_hydro_cosmology, r"gravity-only vs hydro run: Header/Omega0 differs"),
    "chunk_box": (
        _chunk_box,
        r"fof_subhalo_tab_099\.1\.hdf5: Header/BoxSize = 20000\.0 differs from 10000\.0 in the "
        r"first chunk .*fof_subhalo_tab_099\.0\.hdf5",
    ),
    "catalogue_vs_snapshot": (
        _catalogue_box,
        r"snapshot vs its catalogue: Header/BoxSize differs: 10\.0 in .*snap_099\.0\.hdf5 vs 20\.0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_and_writes_nothing(pair, tmp_path, case):
    spoil, message = BAD[case]
    spoil(pair)
    with pytest.raises(SimFileError, match=message):
        _source(pair, tmp_path).build()
    assert not (tmp_path / "store").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _array(path: Path, value=None, shape=(GRID,) * 3) -> None:
    data = np.random.default_rng(1).uniform(0, 1e10, shape).astype(np.float32)
    if value is not None:
        data[3, 2, 1] = value
    np.save(path, data)


def _truncated(path: Path) -> None:
    _array(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_ARRAYS = {
    "nan": (lambda p: _array(p, np.nan), r"stellar\.npy: non-finite or negative masses"),
    "negative": (lambda p: _array(p, -1.0), r"stellar\.npy: non-finite or negative masses"),
    "mismatched": (
        lambda p: _array(p, shape=(GRID // 2,) * 3),
        r"stellar\.npy: shape \(8, 8, 8\) differs from dm's \(16, 16, 16\)",
    ),
    "non_cubic": (
        lambda p: _array(p, shape=(GRID, GRID, GRID - 1)),
        r"stellar\.npy: shape \(16, 16, 15\), expected a cube",
    ),
    "truncated": (_truncated, r"stellar\.npy: not a \.npy array \(option 'stellar'\)"),
    "not_npy": (lambda p: p.write_text("x,y\n1,2\n"), r"stellar\.npy: not a \.npy array"),
    "missing": (lambda p: None, r"stellar\.npy: file not found \(option 'stellar'\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_arrays_raise_naming_the_file_and_write_nothing(tmp_path, case):
    spoil, message = BAD_ARRAYS[case]
    paths = {name: tmp_path / f"{name}.npy" for name in ("dm", "subhalo", "stellar")}
    _array(paths["dm"])
    _array(paths["subhalo"])
    spoil(paths["stellar"])
    with pytest.raises(SourceError, match=message):
        ArraySource(**paths, box=5.0, store_dir=tmp_path / "store").build()
    assert not (tmp_path / "store").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_input_keeps_an_older_store(pair, tmp_path):
    store = _source(pair, tmp_path).build()
    before = store.meta()
    _nan(pair)
    with pytest.raises(SimFileError, match="non-finite"):
        _source(pair, tmp_path).build()
    assert store.meta() == before and store.verify() == []


@pytest.mark.parametrize("grid", [0, 1, 5000, 16.5, "16", True])
def test_grid_rule(tmp_path, grid):
    with pytest.raises(SourceError, match="option 'grid' must"):
        TNGSource(tmp_path, grid=grid, store_dir=tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_wrong_expected_box(pair, tmp_path):
    with pytest.raises(SourceError, match=r"snap_099\.0\.hdf5: Header/BoxSize = 10\.0 Mpc/h but"):
        _source(pair, tmp_path, box=75.0).build()
    assert not (tmp_path / "store").exists()


# -- configs ----------------------------------------------------------------------------------
def _compose(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("name", ["mock", "tng100", "camels", "fields"])
def test_data_configs_share_the_datamodule_keys(name):
    datamodule = OmegaConf.load(CONF / "data" / "datamodule" / "default.yaml")
    cfg = _compose([f"data={name}"]).data
    for key in datamodule:
        assert key in cfg, f"data={name} lacks the data-module key '{key}'"
    assert cfg.inputs == ["dm", "subhalo"] and "_target_" in cfg.source


def test_tng100_config_builds(pair, tmp_path):
    cfg = _compose(["data=tng100", f"data.root={tmp_path}", "data.grid=16",
                    f"paths.data_dir={tmp_path}/data", "data.source.progress=false"])  # fmt: skip
    assert cfg.data.source.snapshot == 99 and cfg.data.source.box == 75.0
    source = instantiate(cfg.data.source, box=10.0, chunk_rows=500)
    assert isinstance(source, TNGSource) and source.grid == 16
    assert source.store_dir == tmp_path / "data/fields/tng100/snap099_grid16"
    _check(source.build().read("dm"), pair.dm_pos, pair.dm_mass, pair.box)


def test_camels_and_fields_configs(tmp_path):
    cfg = _compose(["data=camels", "data.root=/x/IllustrisTNG/LH_3"])
    source = instantiate(cfg.data.source)
    assert isinstance(source, CamelsSource) and source.box == 25.0 and source.snapshot == 90
    assert source.dark_dir == Path("/x/IllustrisTNG_DM/LH_3")
    cfg = _compose(["data=fields", "data.dm=a.npy", "data.subhalo=b.npy", "data.stellar=c.npy",
                    "data.box=75"])  # fmt: skip
    source = instantiate(cfg.data.source)
    assert isinstance(source, ArraySource) and source.box == 75.0
    assert source.paths["subhalo"] == Path("b.npy")


def test_fields_command_builds_and_fails_cleanly(pair, tmp_path):
    args = [sys.executable, "-m", "dm2gal.fields", "data=tng100", f"data.root={tmp_path}",
            "data.grid=8", "data.source.box=10.0", f"paths.data_dir={tmp_path}/data"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, cwd=CONF.parent)
    assert done.returncode == 0, done.stderr
    store_dir = tmp_path / "data/fields/tng100/snap099_grid8"
    assert done.stdout.strip() == str(store_dir)
    assert (store_dir / "dm.npy").is_file() and (store_dir / "catalogs.h5").is_file()
    bad = subprocess.run([*args[:-1], f"paths.data_dir={tmp_path}/d2", "data.grid=4097"],
                         capture_output=True, text=True, cwd=CONF.parent)  # fmt: skip
    assert bad.returncode != 0
    assert "option 'grid' must satisfy 2 <= grid <= 4096, got 4097" in bad.stderr
    assert not (tmp_path / "d2").exists()
