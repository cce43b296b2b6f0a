"""Reference fields: the fitted HODs painted per seed (whole box, or cut to a region exactly as
the whole-box painting is cut) and the mock's oracle fields as stored."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.eval.references import fit_hods, oracle_fields, paint_hods
from dm2gal.hod import BinnedHOD
from dm2gal.io.catalog import CATALOGS_FILE, stack_catalogs
from dm2gal.io.store import FieldStore
from dm2gal.sim import MockUniverse


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    """A 16^3 mock (box 32 Mpc/h) and a binned HOD fitted on all of it."""
    src = MockUniverse(
        box=32.0, particles=16, grid=16, seed=3, steps=5, cache_dir=tmp_path_factory.mktemp("refs")
    )
    store = src.build()
    hod = BinnedHOD().fit(*src.catalogs(), lambda pos: np.zeros(len(pos), dtype=bool), src.box)
    return src, store, hod


def test_paint_hods_mean_and_draws_whole_box_and_region(mock):
    src, store, hod = mock
    halos, _ = src.catalogs()
    whole = paint_hods({"binned": hod}, store, [4, 5])
    assert list(whole) == ["hod_binned_mean", "hod_binned_draw"]
    (mean,) = whole["hod_binned_mean"]
    np.testing.assert_array_equal(mean, hod.paint_mean(halos, store.grid, store.box))
    for seed, field in zip([4, 5], whole["hod_binned_draw"], strict=True):
        np.testing.assert_array_equal(field, hod.paint(halos, store.grid, store.box, seed))
    assert not np.array_equal(*whole["hod_binned_draw"])  # the HOD is random: seeds differ
    region = Region((12, 3, 0), (8, 8, 8), store.grid)  # wraps along x
    cut = paint_hods({"binned": hod}, store, [5], region)
    np.testing.assert_array_equal(
        cut["hod_binned_draw"][0], read_crop(whole["hod_binned_draw"][1], (12, 3, 0), 8)
    )
    np.testing.assert_array_equal(cut["hod_binned_mean"][0], read_crop(mean, (12, 3, 0), 8))
    assert paint_hods({}, store, [5]) == {}


def test_paint_hods_without_catalogues_warns(mock, tmp_path, caplog):
    _, store, hod = mock
    bare = FieldStore(tmp_path / "bare")
    bare.init(store.box, store.grid, source="test")
    with caplog.at_level(logging.WARNING):
        assert paint_hods({"binned": hod}, bare, [0]) == {}
    assert str(tmp_path / "bare" / CATALOGS_FILE) in caplog.text


def test_oracle_fields_as_stored(mock, tmp_path):
    _, store, _ = mock
    whole = oracle_fields(store)
    assert list(whole) == ["oracle_mean", "oracle_draw"]
    for name, field in whole.items():
        assert not isinstance(field, np.memmap)
        np.testing.assert_array_equal(field, store.read(name))
    region = Region((0, 10, 14), (4, 4, 4), store.grid)
    cut = oracle_fields(store, region)
    np.testing.assert_array_equal(
        cut["oracle_mean"], read_crop(whole["oracle_mean"], (0, 10, 14), 4)
    )
    bare = FieldStore(tmp_path / "bare")
    bare.init(store.box, store.grid, source="test")
    assert oracle_fields(bare) == {}


def test_stack_catalogs_keeps_boxes_and_hosts_apart(mock):
    src, _, _ = mock
    halos, galaxies = src.catalogs()
    both_h, both_g = stack_catalogs([(halos, galaxies), (halos, galaxies)], src.box)
    n, m = len(halos), len(galaxies)
    np.testing.assert_array_equal(both_h.pos[n:], halos.pos + [src.box, 0, 0])
    np.testing.assert_array_equal(both_g.pos[:m], galaxies.pos)
    assert both_g.host[m:].min() >= max(n, galaxies.host.max() + 1)
    np.testing.assert_array_equal(both_g.host[m:] - both_g.host[m:].min(), galaxies.host)
    np.testing.assert_array_equal(both_h.mass, np.tile(halos.mass, 2))


def test_fit_hods_on_the_training_region_and_every_further_box_whole(mock):
    """The HOD sees the volume the network trains on: the source box outside its held-out slab
    (x < 8 Mpc/h here) plus the further training box whole."""
    src, store, _ = mock
    other = src.realisation(4)
    slab = SimpleNamespace(is_heldout=lambda pos, box: pos[:, 0] < 8.0)
    dm = SimpleNamespace(store=store, training_boxes=[other.build()], splits=slab, box=src.box)
    cfg = OmegaConf.create({"_target_": "dm2gal.hod.BinnedHOD", "name": "binned"})
    fitted = fit_hods([cfg], dm)["binned"].fitted_params()
    main = BinnedHOD().fit(*src.catalogs(), lambda pos: pos[:, 0] < 8.0, src.box)
    whole = BinnedHOD().fit(*other.catalogs(), lambda pos: np.zeros(len(pos), bool), src.box)
    for key in ("n_centrals", "n_satellites"):
        expected = sum(main.fitted_params()[key]) + sum(whole.fitted_params()[key])
        assert sum(fitted[key]) == expected
    assert sum(fitted["n_centrals"]) > sum(main.fitted_params()["n_centrals"])
    dm.training_boxes = []
    alone = fit_hods([cfg], dm)["binned"].fitted_params()
    assert alone["n_centrals"] == main.fitted_params()["n_centrals"]
