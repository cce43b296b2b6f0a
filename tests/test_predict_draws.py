"""Prediction of a probabilistic network: the mean and seeded draws of a region or a whole box,
independent of the tiling, reproducible from their seeds, into a field store with the seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import mock_cache_dir, run_script

from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.infer.predict import PredictOptions, predict_region, predict_store
from dm2gal.io.store import FieldStore
from dm2gal.models import ProbabilisticNet, UNet3d

GRID = 16
TRANSFORM = FieldTransform([8.0, 8.0], [1.0, 1.0], 1.0, 3.0, log=True, target_max=1e12)


@pytest.fixture(scope="module")
def fields() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.lognormal(18.0, 2.0, (GRID,) * 3).astype(np.float32) for _ in range(2)]


@pytest.fixture(scope="module")
def net() -> ProbabilisticNet:
    """A small untrained net whose occupancy and masses vary from voxel to voxel."""
    torch.manual_seed(0)
    net = ProbabilisticNet(channels=3, levels=1, convs=1, components=2)
    net.set_target_transform(TRANSFORM)
    with torch.no_grad():
        net.offset.copy_(torch.tensor([0.0, 3.0, 0.0]))
    return net.eval()


def _predict(net, fields, region, tile, seeds=(), **kw):
    return predict_region(
        net,
        fields,
        region,
        TRANSFORM.forward_input,
        TRANSFORM.inverse_prediction,
        PredictOptions(tile=tile, progress=False, **kw),
        seeds=seeds,
    )


def test_draws_do_not_depend_on_tiling_and_follow_their_seeds(fields, net) -> None:
    """Mean and draws of a wrapping region with tiles of 2 and 6 (batches of 1 and 5, small
    chunks) agree; the mean equals the plain prediction; a sub-region's draw is the same part
    of the larger one's; seeds repeat and differ."""
    region = Region((13, 2, 9), (8, 10, 12), GRID)
    mean, *draws = _predict(net, fields, region, 2, seeds=(4, 5), batch_size=1)
    again = _predict(net, fields, region, 6, seeds=(4, 5), batch_size=5, chunk_voxels=4000)
    for a, b in zip([mean, *draws], again, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(_predict(net, fields, region, 4), mean, rtol=1e-5)
    inner = Region((15, 4, 9), (4, 6, 8), GRID)
    (_, sub) = _predict(net, fields, inner, 4, seeds=(5,))
    np.testing.assert_allclose(sub, draws[1][2:6, 2:8, 0:8], rtol=1e-5)
    assert not np.allclose(draws[0], draws[1])
    for draw in draws:
        assert (draw == 0).any() and (draw > 0).any() and draw.max() <= 1e12


def test_mean_of_many_draws_approaches_the_mean(fields, net) -> None:
    """Over 64 draws the sample mean of the box's total mass lies within 4 standard errors of
    the mean field's total."""
    region = Region((0, 0, 0), (8, 8, 8), GRID)
    mean, *draws = _predict(net, fields, region, 8, seeds=range(64))
    totals = np.array([d.sum(dtype=np.float64) for d in draws])
    error = totals.std(ddof=1) / np.sqrt(len(totals))
    assert abs(totals.mean() - mean.sum(dtype=np.float64)) < 4 * error


def test_deterministic_network_refuses_seeds(fields) -> None:
    net = UNet3d(in_channels=2, channels=2, levels=1, convs=1).eval()
    with pytest.raises(ConfigError, match="seeds: UNet3d is deterministic"):
        _predict(net, fields, Region((0, 0, 0), (4, 4, 4), GRID), 4, seeds=(1,))


def test_store_holds_mean_and_draws_with_their_seeds(fields, net, tmp_path) -> None:
    source = FieldStore(tmp_path / "sim")
    source.init(20.0, GRID)
    source.write("dm", fields[0])
    source.write("subhalo", fields[1])
    options = PredictOptions(tile=8, progress=False)
    out = tmp_path / "out"
    store = predict_store(
        net, TRANSFORM, source, ["dm", "subhalo"], out, "stellar", options=options, seeds=(7, 8)
    )
    assert set(store.fields()) == {"stellar_mean", "stellar_draw_0", "stellar_draw_1"}
    assert store.field_meta("stellar_mean")["draw_seeds"] == [7, 8]
    assert store.field_meta("stellar_draw_1")["seed"] == 8
    box = Region((0, 0, 0), (GRID,) * 3, GRID)
    want = _predict(net, fields, box, 4, seeds=(7, 8))
    for name, field in zip(["stellar_mean", "stellar_draw_0", "stellar_draw_1"], want, strict=True):
        np.testing.assert_allclose(store.read(name), field, rtol=1e-5)


@pytest.mark.slow
def test_predict_cli_writes_mean_and_seeded_draws(tmp_path) -> None:
    """``python -m dm2gal.predict run_dir=... samples=2 seed=3`` after a smoke training of the
    probabilistic model: the store holds the mean and two draws with their seeds."""
    run_script(
        "train.py",
        "experiment=smoke",
        "model=probabilistic",
        "loss=nll",
        "logger=csv",
        "test=false",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={mock_cache_dir()}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        cwd=tmp_path,
    )
    (run,) = [p.parent.parent for p in tmp_path.glob("smoke/*/*/.hydra/config.yaml")]
    out = tmp_path / "box"
    run_script(
        "dm2gal.predict", f"run_dir={run}", f"out={out}", "samples=2", "seed=3", cwd=tmp_path
    )
    store = FieldStore(out)
    assert {"stellar_mean", "stellar_draw_0", "stellar_draw_1"} <= set(store.fields())
    assert store.field_meta("stellar_mean")["draw_seeds"] == [3, 4]
    assert [store.field_meta(f"stellar_draw_{i}")["seed"] for i in range(2)] == [3, 4]
    a, b = store.read("stellar_draw_0"), store.read("stellar_draw_1")
    assert a.min() >= 0 and not np.array_equal(a, b)
