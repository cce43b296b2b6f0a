"""Reference fields: the fitted HODs painted per seed (whole box, or cut to a region exactly as
the whole-box painting is cut) and the mock's oracle fields as stored."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.eval.references import oracle_fields, paint_hods
from dm2gal.hod import BinnedHOD
from dm2gal.io.catalog import CATALOGS_FILE
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


def test_paint_hods_per_seed_whole_box_and_region(mock):
    src, store, hod = mock
    halos, _ = src.catalogs()
    whole = paint_hods({"binned": hod}, store, [4, 5])
    assert list(whole) == ["hod_binned"]
    for seed, field in zip([4, 5], whole["hod_binned"], strict=True):
        np.testing.assert_array_equal(field, hod.paint(halos, store.grid, store.box, seed))
    assert not np.array_equal(*whole["hod_binned"])  # the HOD is random: seeds differ
    region = Region((12, 3, 0), (8, 8, 8), store.grid)  # wraps along x
    (cut,) = paint_hods({"binned": hod}, store, [5], region)["hod_binned"]
    np.testing.assert_array_equal(cut, read_crop(whole["hod_binned"][1], (12, 3, 0), 8))
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
