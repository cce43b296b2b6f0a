"""The jobs of the test-region evaluation, each on its own: the cubic test region, the
network's fields and draws apart, and the test fields' store."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dm2gal.data.regions import Region
from dm2gal.errors import ConfigError
from dm2gal.eval.evaluation import (
    RegionFields,
    cubic_test_region,
    split_draws,
    write_test_fields,
)
from dm2gal.io.store import FieldStore


def test_a_test_region_that_is_not_a_cube_is_one_user_error():
    cube = Region((1, 2, 3), (4, 4, 4), 16)
    assert cubic_test_region(SimpleNamespace(splits=SimpleNamespace(test=cube))) is cube
    slab = SimpleNamespace(splits=SimpleNamespace(test=Region((0, 0, 0), (4, 4, 6), 16)))
    with pytest.raises(ConfigError, match=r"data.splits: the test region must be a cube .*6"):
        cubic_test_region(slab)


def test_the_network_fields_and_its_draws_are_told_apart():
    mean, a, b = (np.full((2, 2, 2), v, np.float32) for v in (1.0, 2.0, 3.0))
    fields, draws = split_draws({"model_mean": [mean], "model_draw": [a, b]})
    assert list(fields) == ["model_mean"] and fields["model_mean"] is mean
    assert list(draws) == ["model_draw"] and [d[0, 0, 0] for d in draws["model_draw"]] == [2, 3]
    fields, draws = split_draws({"model": [mean]})
    assert list(fields) == ["model"] and draws == {}


def test_test_fields_are_stored_with_their_region_and_the_draws_seeds(tmp_path):
    source = FieldStore(tmp_path / "box")
    source.init(32.0, 16)
    region = Region((2, 3, 14), (8, 8, 8), 16)  # wraps in z
    rng = np.random.default_rng(1)
    truth, model, *draws = (rng.random((8, 8, 8), dtype=np.float32) for _ in range(4))
    test = RegionFields(truth, {"model_mean": model}, {"model_draw": draws})
    write_test_fields(tmp_path / "fields", source, region, test, {"x": 1}, seed=5)
    out = FieldStore(tmp_path / "fields")
    assert (out.box, out.grid) == (16.0, 8)  # 8 voxels of 2 Mpc/h
    attrs = out.meta()["attrs"]
    assert (attrs["region_start"], attrs["seed"], attrs["config"]) == ([2, 3, 14], 5, {"x": 1})
    np.testing.assert_array_equal(out.read("truth"), truth)
    np.testing.assert_array_equal(out.read("model_mean"), model)
    for i, draw in enumerate(draws):
        np.testing.assert_array_equal(out.read(f"model_draw_{i}"), draw)
        assert out.field_meta(f"model_draw_{i}")["seed"] == 5 + i
    assert out.verify() == []
