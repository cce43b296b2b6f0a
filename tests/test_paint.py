"""Painting a gravity-only run: catalogues back to CIC, the trust checks, and end to end on the
mock (a network trained on one universe paints another from its gravity-only files; the mean
equals the prediction of the realisation path; an exported model paints bit-identically)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, mock_cache_dir, run_script

from dm2gal.infer import catalog
from dm2gal.infer.catalog import (
    field_galaxies,
    nearest_velocities,
    read_galaxy_catalog,
    write_galaxy_catalog,
)
from dm2gal.infer.predict import PredictOptions, predict_store
from dm2gal.io.gravity_fields import Tracers
from dm2gal.io.paint import paint
from dm2gal.io.recipe import FieldRecipe, Recipe, SimInfo
from dm2gal.io.store import FieldStore
from dm2gal.paint.model import load_model
from dm2gal.paint.pipeline import read_summary
from dm2gal.paint.statistics import StatBins, stellar_mass_function
from dm2gal.paint.trust import TrustError, TrustOptions, differences, paint_grid, redshift_warning
from dm2gal.sim import MockUniverse

SIM = SimInfo(75.0, 0.0, 0.3089, 0.6774, 1.0e9, "subfind")
RECIPE = Recipe(FieldRecipe(), SIM, voxel_size=75.0 / 128)


def test_catalogue_painted_back_gives_the_field(tmp_path):
    """Galaxies on tracers plus voxel-node remainders: CIC of the catalogue is the field; with
    a minimum mass the left-out mass is what is missing."""
    rng = np.random.default_rng(1)
    box, grid, n = 20.0, 16, 200
    tracers = Tracers(
        rng.uniform(0, box, (n, 3)), 10 ** rng.uniform(10, 13, n), rng.normal(size=(n, 3)),
        np.arange(n) + 100,
    )  # fmt: skip
    stars = np.vstack([tracers.pos[:80], tracers.pos[:150] + rng.normal(0, 0.4, (150, 3))])
    field = paint(stars, 10 ** rng.uniform(7.5, 11, len(stars)), grid, box)
    galaxies, dropped = field_galaxies(field, box, tracers, assignment="exact")
    assert dropped == 0.0 and (galaxies.host >= 100).sum() > 50
    back = paint(galaxies.pos, galaxies.mstar, grid, box)
    np.testing.assert_allclose(back, field, rtol=1e-5, atol=1e-5 * field.max())
    on_halo = galaxies.host >= 0
    np.testing.assert_array_equal(galaxies.vel[on_halo], tracers.vel[galaxies.host[on_halo] - 100])
    nearest = nearest_velocities(galaxies.pos[~on_halo], tracers.pos, tracers.vel, box)
    np.testing.assert_array_equal(galaxies.vel[~on_halo], nearest)
    big, left_out = field_galaxies(field, box, tracers, min_mass=1e9, assignment="exact")
    assert big.mstar.min() >= 1e9
    assert big.mstar.sum() + left_out == pytest.approx(field.sum(dtype=np.float64), rel=1e-6)
    path = tmp_path / "cat.h5"
    write_galaxy_catalog(path, big.pos, big.mstar, big.vel, big.host, seed=3, model={"a": 1})
    again, attrs = read_galaxy_catalog(path)
    np.testing.assert_array_equal(again.mstar, big.mstar)
    assert attrs["seed"] == 3 and attrs["model"] == '{"a": 1}'


def test_shared_assignment_gives_each_halo_its_footprint():
    """Tracers with disjoint CIC footprints each get the mass of their 8 voxels; the other
    voxels become node galaxies; the total is kept."""
    rng = np.random.default_rng(2)
    box, grid = 32.0, 16
    corners = np.stack(np.meshgrid(*[np.arange(0, grid, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = (corners + rng.uniform(0.1, 0.9, corners.shape)) * (box / grid)
    n = len(pos)
    tracers = Tracers(pos, 10 ** rng.uniform(10, 13, n), np.zeros((n, 3)), np.arange(n))
    field = rng.lognormal(18, 1, (grid,) * 3).astype(np.float32)
    galaxies, _ = field_galaxies(field, box, tracers)
    on = galaxies.host >= 0
    footprint = [field[i : i + 2, j : j + 2, k : k + 2].sum(dtype=np.float64)
                 for i, j, k in corners[galaxies.host[on]]]  # fmt: skip
    np.testing.assert_allclose(galaxies.mstar[on], footprint, rtol=1e-9)
    assert (~on).sum() == grid**3 - 8 * n
    assert galaxies.mstar.sum() == pytest.approx(field.sum(dtype=np.float64), rel=1e-9)


@pytest.mark.parametrize("assignment", ["share", "exact"])
def test_catalogue_streams_the_field_in_slabs(tmp_path, monkeypatch, assignment):
    """Node galaxies collected a few x-planes at a time from a memory-mapped float32 field are
    those of the whole field in memory at once (same galaxies, same left-out mass)."""
    rng = np.random.default_rng(3)
    box, grid, n = 20.0, 16, 120
    tracers = Tracers(rng.uniform(0, box, (n, 3)), 10 ** rng.uniform(10, 13, n),
                      rng.normal(size=(n, 3)), np.arange(n))  # fmt: skip
    field = rng.lognormal(19, 2, (grid,) * 3).astype(np.float32)
    whole, dropped = field_galaxies(field, box, tracers, 1e8, assignment)
    np.save(tmp_path / "field.npy", field)
    monkeypatch.setattr(catalog, "SLAB_VOXELS", 3 * grid * grid)  # 6 slabs, the last short
    slabbed, dropped_slabbed = field_galaxies(
        np.load(tmp_path / "field.npy", mmap_mode="r"), box, tracers, 1e8, assignment
    )
    for key in ("pos", "mstar", "vel", "host"):
        np.testing.assert_array_equal(getattr(slabbed, key), getattr(whole, key))
    assert dropped_slabbed == pytest.approx(dropped, rel=1e-12)
    assert slabbed.mstar.sum() + dropped == pytest.approx(field.sum(dtype=np.float64), rel=1e-9)


def test_trust_checks():
    """Grid from the voxel within the tolerance; redshift refused unless allowed; cosmology,
    particle mass, catalogue kind and mass definition differences are warnings."""
    assert paint_grid(RECIPE, SIM, 0.01) == 128
    assert paint_grid(RECIPE, SimInfo(**{**SIM.__dict__, "box": 150.6}), 0.01) == 257
    with pytest.raises(TrustError, match=r"box 50 Mpc/h on a 85\^3 grid .* 0.588235 .* 0.585938"):
        paint_grid(RECIPE, SimInfo(**{**SIM.__dict__, "box": 50.0}), 0.001)
    at_z1 = SimInfo(**{**SIM.__dict__, "redshift": 1.0})
    with pytest.raises(TrustError, match="redshift 1, the network was trained at z=0"):
        redshift_warning(RECIPE, at_z1, TrustOptions())
    assert redshift_warning(RECIPE, at_z1, TrustOptions(allow_redshift=True))
    assert differences(RECIPE, SIM, "SubhaloMass") == []
    other = SimInfo(75.0, 0.0, 0.315, 0.6774, 2.0e9, "compaso")
    found = differences(RECIPE, other, "N")
    assert [w.split(":")[0] for w in found] == [
        "Omega_m", "particle mass", "halo catalogue", "subhalo mass",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A smoke training of the probabilistic network on the small mock (recipe recorded)."""
    tmp = tmp_path_factory.mktemp("run")
    run_script(
        "train.py", "experiment=smoke", "model=probabilistic", "loss=nll", "logger=csv",
        "test=false", f"paths.log_dir={tmp}", f"paths.data_dir={mock_cache_dir()}",
        "trainer.max_epochs=1", "trainer.limit_train_batches=4", cwd=tmp,
    )  # fmt: skip
    (run,) = [p.parent.parent for p in tmp.glob("smoke/*/*/.hydra/config.yaml")]
    return run


def _unseen_mock() -> FieldStore:
    mock = MockUniverse(box=50.0, particles=32, grid=64, steps=5, seed=7,
                        cache_dir=mock_cache_dir() / "mock")  # fmt: skip
    return mock.build()


@pytest.mark.slow
def test_paint_an_unseen_mock_and_an_exported_model(trained, tmp_path):
    recipe = Recipe.load(trained / "recipe.json")
    assert recipe.sim.halo_catalog == "own_fof" and recipe.fields.subhalo_mass == "M200c"
    unseen = _unseen_mock()
    out = tmp_path / "painted"
    args = [f"sim.root={unseen.root}", "samples=2", "seed=5", "progress=false"]
    run_script("dm2gal.paint", f"model={trained}", *args, f"out={out}", cwd=tmp_path)
    store = FieldStore(out)
    # the realisation path: the run's network on the mock's own store
    model = load_model(trained)
    direct = predict_store(
        model.net, model.transform, unseen, ["dm", "subhalo"], tmp_path / "direct", "stellar",
        options=PredictOptions(model.options.tile, model.options.batch_size, progress=False),
        seeds=[5, 6],
    )  # fmt: skip
    for name in ("stellar_mean", "stellar_draw_0", "stellar_draw_1"):
        np.testing.assert_allclose(store.read(name), direct.read(name), rtol=1e-6, atol=1e-3)
    summary = read_summary(out)["summary"]
    assert summary["grid"] == 64 and summary["warnings"] == []
    cat, attrs = read_galaxy_catalog(out / "catalogs" / "stellar_draw_1.h5")
    assert attrs["seed"] == 6 and cat.mstar.min() >= 1e8
    assert cat.mstar.sum() + attrs["mass_left_out"] == pytest.approx(attrs["field_mass"], rel=1e-5)
    exported = tmp_path / "exported"
    run_script("dm2gal.export", f"run_dir={trained}", f"out={exported}", cwd=tmp_path)
    assert (exported / "model.safetensors").is_file() and (exported / "model_card.json").is_file()
    again = tmp_path / "again"
    run_script("dm2gal.paint", f"model={exported}", *args, f"out={again}", cwd=tmp_path)
    for name in ("stellar_mean", "stellar_draw_0", "stellar_draw_1"):
        assert store.field_meta(name)["hash"] == FieldStore(again).field_meta(name)["hash"]


REAL = ROOT.parent / "shared" / "fixtures" / "real"
GADGET4 = "gadget4_lcdm_gas_32cube_L50_z0.hdf5"
REFUSALS = {
    "voxel": (["sim=abacus", f"sim.root={REAL / 'abacus' / 'Mini_N64_L32'}",
               "voxel_tolerance=0.0001"], "box 32 Mpc/h on a 41^3 grid gives voxels of 0.780488"),
    "redshift": (["sim=gadget", f"sim.root={REAL}",
                  "sim.file=tng50-1-dark_cutout_z20_parttype1.hdf5"], "redshift 20.0"),
    "files": (["sim=gadget", "sim.root=/nonexistent"], "/nonexistent: no such directory"),
    "samples": (["samples=-1"], "samples: expected an integer >= 0"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real fixtures absent: {REAL}")
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_are_one_line_and_write_nothing(trained, tmp_path, case):
    args, message = REFUSALS[case]
    if not any(a.startswith("sim=") for a in args):
        args = [*args, f"sim.root={_unseen_mock().root}"]
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "dm2gal.paint", f"model={trained}", f"out={out}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real fixtures absent: {REAL}")
@pytest.mark.parametrize(
    ("args", "grid", "warned"),
    [
        (["sim=abacus", f"sim.root={REAL / 'abacus' / 'Mini_N64_L32'}"], 41, "halo catalogue"),
        (["sim=gadget", f"sim.root={REAL}", f"sim.file={GADGET4}"], 64, "Omega_m"),
    ],
)
def test_real_runs_paint_end_to_end(trained, tmp_path, args, grid, warned):
    """The Abacus test run (CompaSO halos) and the GADGET-4 file (own FoF): fields, mean, two
    draws and their catalogues, the differences from the training run recorded."""
    if "sim=abacus" in args:
        pytest.importorskip("abacusnbody", reason="the abacus extra is not installed")
    out = tmp_path / "out"
    run_script("dm2gal.paint", f"model={trained}", *args, "samples=2", f"out={out}",
               "progress=false", cwd=tmp_path)  # fmt: skip
    summary = read_summary(out)["summary"]
    assert summary["grid"] == grid and any(w.startswith(warned) for w in summary["warnings"])
    store = FieldStore(out)
    for name in ("stellar_mean", "stellar_draw_0", "stellar_draw_1"):
        assert store.read(name).sum() > 0
        cat, attrs = read_galaxy_catalog(out / "catalogs" / f"{name}.h5")
        assert len(cat) == summary["galaxies"][name] and json.loads(attrs["recipe"])["version"]
    assert store.meta()["fields"]["stellar_mean"]["paint_warnings"] == summary["warnings"]


def _paint_args(trained: Path, out: Path, *extra: str) -> list[str]:
    return [f"model={trained}", f"sim.root={_unseen_mock().root}", "samples=2", "seed=5",
            "progress=false", f"out={out}", *extra]  # fmt: skip


PAINTED = ("dm", "subhalo", "stellar_mean", "stellar_draw_0", "stellar_draw_1")


def _same_fields(a: Path, b: Path) -> None:
    for name in PAINTED:
        assert FieldStore(a).field_meta(name)["hash"] == FieldStore(b).field_meta(name)["hash"]
        np.testing.assert_array_equal(FieldStore(a).read(name), FieldStore(b).read(name))


@pytest.mark.slow
def test_slabs_equal_one_process_bit_for_bit_and_a_failed_slab_reruns_alone(trained, tmp_path):
    whole = tmp_path / "whole"
    run_script("dm2gal.paint", *_paint_args(trained, whole), cwd=tmp_path)
    in_turn = tmp_path / "in_turn"
    run_script("dm2gal.paint", *_paint_args(trained, in_turn, "slabs=3"), cwd=tmp_path)
    _same_fields(whole, in_turn)
    # slab 1 "fails" (never runs): nothing under out's name; rerun alone, it assembles
    out = tmp_path / "slabbed"
    for slab in (2, 0):
        run_script("dm2gal.paint", *_paint_args(trained, out, "slabs=3", f"slab={slab}"),
                   cwd=tmp_path)  # fmt: skip
        assert not out.exists()
    assert len(list((tmp_path / "slabbed.slabs").glob("stellar_*.npy"))) == 6
    run_script("dm2gal.paint", *_paint_args(trained, out, "slabs=3", "slab=1"), cwd=tmp_path)
    _same_fields(whole, out)
    assert not (tmp_path / "slabbed.slabs").exists()
    assert read_summary(out)["summary"]["galaxies"] == read_summary(whole)["summary"]["galaxies"]


@pytest.mark.slow
@pytest.mark.slurm
def test_slabs_as_a_slurm_array_equal_one_process(trained, tmp_path):
    """``-m hydra/launcher=slurm slabs=3 slab=0,1,2``: one array, assembled by the last job."""
    import test_slurm  # the module, not its autouse fixture

    problem = test_slurm.cluster_problem()
    if problem:
        pytest.skip(problem)
    whole, out = tmp_path / "whole", tmp_path / "slurm"
    run_script("dm2gal.paint", *_paint_args(trained, whole), cwd=tmp_path)
    launcher = ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]  # fmt: skip
    run_script("dm2gal.paint", *launcher, *_paint_args(trained, out, "slabs=3", "slab=0,1,2"),
               cwd=tmp_path)  # fmt: skip
    _same_fields(whole, out)
    assert sorted(p.name for p in (tmp_path / "slurm.jobs").glob("slab*")) == [
        "slab0", "slab1", "slab2",
    ]  # fmt: skip


@pytest.mark.slow
def test_a_foreign_pickle_is_refused_unless_trusted(trained, tmp_path):
    """A checkpoint holding an object dm2gal checkpoints never hold: one line, exit 1, nothing
    written; with trust_checkpoint=true it paints."""
    state = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    state["extra"] = argparse.Namespace(note="from elsewhere")
    foreign = tmp_path / "foreign.ckpt"
    torch.save(state, foreign)
    out = tmp_path / "out"
    args = _paint_args(trained, out, f"ckpt_path={foreign}")
    result = subprocess.run([sys.executable, "-m", "dm2gal.paint", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert "argparse.Namespace" in lines[0] and "trust" in lines[0]
    assert not out.exists()
    run_script("dm2gal.paint", *args, "trust_checkpoint=true", cwd=tmp_path)
    assert (out / "stellar_mean.npy").is_file()


@pytest.mark.slow
def test_compare_tables_truth_painted_and_hod(trained, tmp_path):
    """``python -m dm2gal.paint.compare`` on two unseen small mocks: the truth's row is the
    mean of the boxes' own stellar-mass functions; every kind has every statistic."""
    out = tmp_path / "stats"
    run_script("dm2gal.paint.compare", f"model={trained}", f"out={out}", "seeds=[7,8]",
               f"cache_dir={mock_cache_dir() / 'mock'}", "bins.r_max=15", "bins.mass_cut=1e9",
               "hods=[binned]", "progress=false", cwd=tmp_path)  # fmt: skip
    table = json.loads((out / "catalog_stats.json").read_text())
    bins = StatBins(r_max=15, mass_cut=1e9)
    smfs = []
    for seed in (7, 8):
        mock = MockUniverse(box=50.0, particles=32, grid=64, steps=5, seed=seed,
                            cache_dir=mock_cache_dir() / "mock")  # fmt: skip
        _, truth = mock.catalogs()
        smfs.append(stellar_mass_function(truth.mstar, 50.0, bins))
    np.testing.assert_allclose(table["truth"]["smf"]["mean"], np.mean(smfs, axis=0))
    np.testing.assert_allclose(table["truth"]["smf"]["std"], np.std(smfs, axis=0, ddof=1))
    for kind in ("model_mean", "model_draw", "hod_binned"):
        assert {"smf", "xi"} <= set(table[kind])
    assert "hod_decorated" not in table
    assert "| 9.00-9.25 |" in (out / "catalog_stats.md").read_text()
