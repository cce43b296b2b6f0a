"""Evaluation of a probabilistic network: its mean (``model_mean``) and seeded draws
(``model_draw``, each score the mean over the draws with their std) on the test region and on
whole-box realisations, beside the oracles; a deterministic network's report keeps ``model``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import mock_cache_dir

from dm2gal.data.regions import Region
from dm2gal.data.splits import Splits
from dm2gal.data.transforms import FieldTransform
from dm2gal.eval.evaluation import EvaluationSettings, evaluate_test_region, predict_network
from dm2gal.eval.realisations import evaluate_realisations, whole_box
from dm2gal.eval.report import ReportOptions, measure_draws
from dm2gal.infer.calibration import QuantileMap
from dm2gal.infer.predict import predict_fields
from dm2gal.io.store import FieldStore
from dm2gal.models import ProbabilisticNet, UNet3d
from dm2gal.sim import MockUniverse

SMALL = {"box": 32.0, "particles": 32, "grid": 32, "seed": 5, "steps": 5}
OPTIONS = ReportOptions(k_pairs=((1.0, 1.2),), thetas=(0.5, 2.0), slice_width=2)
TRANSFORM = FieldTransform([10.0, 10.0], [1.0, 1.0], 1.0, 3.0, log=True, target_max=1e12)
SEED = 11


@pytest.fixture(scope="module")
def store() -> FieldStore:
    return MockUniverse(**SMALL, cache_dir=mock_cache_dir()).build()


@pytest.fixture(scope="module")
def net() -> ProbabilisticNet:
    """A small untrained net whose occupancy and masses vary from voxel to voxel."""
    torch.manual_seed(0)
    net = ProbabilisticNet(in_channels=2, channels=3, levels=1, convs=1, components=2)
    net.set_target_transform(TRANSFORM)
    with torch.no_grad():
        net.offset.copy_(torch.tensor([0.0, 3.0, 0.0]))
    return net.eval()


def datamodule(store: FieldStore) -> SimpleNamespace:
    """What the evaluation reads of a data module: a 16^3 test cube of the 32^3 mock."""
    splits = SimpleNamespace(test=Region((4, 8, 0), (16,) * 3, store.grid))
    return SimpleNamespace(
        store=store, splits=splits, transform=TRANSFORM, inputs=["dm", "subhalo"], target="stellar"
    )


def settings(draws: int) -> EvaluationSettings:
    return EvaluationSettings(tile=8, min_mass=None, report=OPTIONS, draws=draws)


def test_test_region_reports_the_mean_and_the_draws(store, net, tmp_path):
    """metrics.json: model_mean and model_draw beside the oracles, no model; model_draw is the
    mean of the two seeded draws scored alone (which the results store holds, equal to a direct
    prediction), their std > 0 in the draws block and in the returned metrics."""
    dm = datamodule(store)
    metrics = evaluate_test_region(net, dm, tmp_path, settings(2), seed=SEED)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report["models"]) == {"model_mean", "model_draw", "oracle_mean", "oracle_draw"}
    assert report["draws"]["model_draw"]["count"] == 2
    std = report["draws"]["model_draw"]["std"]
    assert std["pk_ratio_abs_err"] > 0 and std["total_mass_rel_err"] > 0
    assert metrics["model_draw/pk_ratio_abs_err/std"] == std["pk_ratio_abs_err"]
    assert metrics["model_draw/rk_mean_large"] == report["models"]["model_draw"]["rk_mean_large"]

    inputs = [store.read(name) for name in dm.inputs]
    options = settings(2).predict_options(progress=False)
    mean, *draws = predict_fields(
        net, TRANSFORM, inputs, dm.splits.test, options, seeds=[SEED, SEED + 1]
    )
    fields = FieldStore(tmp_path / "fields")
    np.testing.assert_allclose(fields.read("model_mean"), mean, rtol=1e-6)
    for i, draw in enumerate(draws):
        np.testing.assert_allclose(fields.read(f"model_draw_{i}"), draw, rtol=1e-6)
        assert fields.field_meta(f"model_draw_{i}")["seed"] == SEED + i
    truth = fields.read("truth")
    # a draw's decorrelation ratio is over the oracle draw's (like with like)
    oracle = {"oracle_draw": fields.read("oracle_draw")}
    alone = [
        measure_draws(16.0, truth, {"d_draw": d} | oracle, {}, OPTIONS).scores["d_draw"]
        for d in draws
    ]
    for key, value in report["models"]["model_draw"].items():
        assert value == pytest.approx((alone[0][key] + alone[1][key]) / 2, rel=1e-5), key
    for name in ("pk", "rk", "pdf"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_one_draw_and_no_draws(store, net, tmp_path):
    """One draw: model_draw scores as that draw, std null and absent from the metrics; no
    draws: the mean only."""
    metrics = evaluate_test_region(net, datamodule(store), tmp_path / "one", settings(1), seed=3)
    report = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert set(report["draws"]["model_draw"]["std"].values()) == {None}
    assert not any(key.endswith("/std") for key in metrics)
    values = report["draws"]["model_draw"]["values"]
    assert report["models"]["model_draw"] == {key: v[0] for key, v in values.items()}
    evaluate_test_region(net, datamodule(store), tmp_path / "none", settings(0), seed=3)
    none = json.loads((tmp_path / "none" / "metrics.json").read_text())
    assert "model_mean" in none["models"] and "model_draw" not in none["models"]
    assert "draws" not in none
    assert none["models"]["model_mean"] == report["models"]["model_mean"]


def test_deterministic_network_report_is_unchanged(store, tmp_path):
    """A UNet's report has its ``model`` row and no draws, whatever evaluation.draws says."""
    torch.manual_seed(0)
    unet = UNet3d(in_channels=2, channels=2, levels=1, convs=1).eval()
    evaluate_test_region(unet, datamodule(store), tmp_path, settings(3), seed=SEED)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report["models"]) == {"model", "oracle_mean", "oracle_draw"}
    assert "draws" not in report
    assert set(FieldStore(tmp_path / "fields").fields()) == {"truth", "model"} | set(
        report["models"]
    )


def test_realisations_average_the_draws_per_box(store, net, tmp_path):
    """On each box the draws' scores are averaged (kept per box as ``draws``), then mean +- std
    over boxes; the same box twice gives std 0 over boxes but not within a box."""
    options = settings(2).predict_options(progress=False)

    def predict(s: FieldStore) -> list[np.ndarray]:
        inputs = [s.read(name) for name in ("dm", "subhalo")]
        return predict_network(net, TRANSFORM, inputs, whole_box(s), options, 2, SEED)

    summary = evaluate_realisations([store, store], predict, "stellar", tmp_path, OPTIONS)
    assert {"model_mean", "model_draw"} <= set(summary) and "model" not in summary
    entry = summary["model_draw"]["pk_ratio_abs_err"]
    assert entry["std"] == 0.0 and entry["draw_std"] > 0
    assert entry["values"][0] == pytest.approx(np.mean(entry["draws"][0]))
    assert len(entry["draws"][0]) == 2
    assert "draws" not in summary["model_mean"]["pk_ratio_abs_err"]
    text = (tmp_path / "realisations.md").read_text()
    assert "| metric |" in text and "model_draw" in text
    assert json.loads((tmp_path / "realisations.json").read_text()) == summary


def test_draw_settings_are_checked():
    assert EvaluationSettings().draws == 4
    with pytest.raises(ValueError, match="evaluation.draws"):
        EvaluationSettings.from_config({"draws": -1})


def test_the_calibrated_mean_is_the_saved_table_applied_to_the_mean(store, net, tmp_path):
    """With calibration_voxels: the calibration fitted on the training voxels is saved, and the
    stored model_calibrated is that table applied to the stored mean, scored beside it."""
    test = Region((0, 0, 0), (16,) * 3, store.grid)
    splits = Splits(test=test, val=Region((20, 0, 0), (4, 32, 32), store.grid), guard=1)
    dm = SimpleNamespace(**{**vars(datamodule(store)), "splits": splits})
    options = EvaluationSettings(
        tile=8, min_mass=None, calibration_voxels=8 * 32**2, report=OPTIONS, draws=0
    )
    metrics = evaluate_test_region(net, dm, tmp_path, options, seed=SEED)
    fields = FieldStore(tmp_path / "fields")
    calibrate = QuantileMap.load(tmp_path / "calibration.csv")
    np.testing.assert_allclose(
        fields.read("model_calibrated"), calibrate(fields.read("model_mean")), rtol=1e-6
    )
    assert {"model_mean/rk_mean", "model_calibrated/rk_mean"} <= set(metrics)
