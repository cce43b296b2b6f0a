"""W&B views of evaluations, validation and config, read back from the offline run files."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from wandb_offline import read_run

from dm2gal.eval.headline import headline_metrics, margins, read_columns
from dm2gal.eval.wandb_tables import log_evaluation
from dm2gal.stats.torch_backend import cross_power_torch
from dm2gal.train.callbacks import FieldStatsCallback
from dm2gal.train.loggers import wandb_logger
from dm2gal.train.pipeline import config_params

SCORES = {
    "model": {"pk_ratio_abs_err": 0.25, "rk_mean": 0.75, "rk_mean_large": 0.875, "k_max": 4.0},
    "hod_zheng07_mean": {"pk_ratio_abs_err": 0.375, "rk_mean": 0.25, "k_max": 4.0},
    "hod_binned_mean": {
        "pk_ratio_abs_err": 0.5,
        "rk_mean": 0.5,
        "rk_mean_large": 0.625,
        "k_max": 4.0,
    },  # fmt: skip
    "hod_binned_draw": {"pk_ratio_abs_err": 0.125, "rk_mean": 0.125, "k_max": 4.0},
    "oracle_mean": {"pk_ratio_abs_err": 0.0625, "rk_mean": 0.9375, "k_max": 4.0},
}


def test_headline_metrics_prefer_bands_and_keep_the_order():
    names = ["log_rmse", "rk_mean", "pk_ratio_abs_err", "rk_mean_large"]
    assert headline_metrics([*names, "decorrelation_ratio_small"]) == [
        "pk_ratio_abs_err",
        "rk_mean_large",
        "decorrelation_ratio_small",
    ]


def test_margins_are_against_the_strongest_benchmark_of_the_same_kind():
    # per metric the best HOD mean (never the draw, whose P err is lower here): P err
    # 0.25 - 0.375 (zheng07), r 0.75 - 0.5 and 0.875 - 0.625 (binned)
    assert margins(SCORES) == {"pk_ratio_abs_err": -0.125, "rk_mean": 0.25, "rk_mean_large": 0.25}
    assert margins({"model": SCORES["model"], "hod_zheng07_mean": SCORES["hod_zheng07_mean"]}) == {
        "pk_ratio_abs_err": -0.125,
        "rk_mean": 0.5,
    }
    assert margins({"model": SCORES["model"]}) == {}
    assert margins({"model": SCORES["model"], "hod_binned_draw": SCORES["hod_binned_draw"]}) == {}
    # a draw is measured against the HOD draws
    drawn = {"model_draw": SCORES["model"], "hod_binned_draw": SCORES["hod_binned_draw"]}
    assert margins(drawn, "model_draw") == {"pk_ratio_abs_err": 0.125, "rk_mean": 0.625}
    # the headline field: a probabilistic run's mean before its draws, a calibrated field
    # before the raw one
    hods = {k: v for k, v in SCORES.items() if k.startswith("hod_")}
    drawn = {"model_mean": SCORES["model"], "model_draw": SCORES["hod_zheng07_mean"]}
    assert margins(drawn | hods) == margins(SCORES)
    calibrated = {"model_calibrated": SCORES["model"], "model": SCORES["hod_zheng07_mean"]}
    assert margins(calibrated | hods) == margins(SCORES)


def write_curves(report: Path) -> dict[str, dict[str, np.ndarray]]:
    """Report-like ``pk.csv`` and ``rk.csv`` (model, two references) in ``report``."""
    k = np.array([0.5, 1.0, 2.0, 4.0])
    fields = {"model": 0.5, "hod_binned": 0.25, "oracle_mean": 0.75}
    tables = {
        "pk": {"k": k, "nmodes": 6.0 * k**2, "pk_truth": 100.0 / k}
        | {f"pk_{n}": 100.0 * a / k for n, a in fields.items()}
        | {f"ratio_{n}": np.full(4, a) for n, a in fields.items()},
        "rk": {"k": k} | {f"r_{n}": a / k for n, a in fields.items()},
    }
    report.mkdir(parents=True)
    for stem, columns in tables.items():
        with (report / f"{stem}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(columns))
            writer.writerows(zip(*columns.values(), strict=True))
    return tables


def test_evaluation_curves_and_scores_reach_the_offline_run(tmp_path: Path):
    tables = write_curves(tmp_path / "evaluation")
    assert {k: list(v) for k, v in tables.items()} == {
        stem: list(read_columns(tmp_path / "evaluation" / f"{stem}.csv")) for stem in tables
    }
    metrics = {f"{name}/{key}": v for name, values in SCORES.items() for key, v in values.items()}
    metrics["model/above_1e+08/rk_mean"] = 0.5
    logger = wandb_logger(save_dir=str(tmp_path), offline=True, project="test")
    log_evaluation(logger.experiment, tmp_path / "evaluation", metrics)
    logger.experiment.finish()

    run = read_run(tmp_path)
    for stem, columns in tables.items():
        logged = run.tables[f"eval/curves/{stem}"]
        assert logged["columns"] == list(columns)
        expected = np.column_stack(list(columns.values()))
        np.testing.assert_allclose(np.array(logged["data"]), expected)
    # the line charts: one series per field, x = k, against every reference
    chart = run.tables["eval/charts/pk_ratio_table"]
    assert chart["columns"] == ["step", "lineKey", "lineVal"]
    series = {key: [v for _, k, v in chart["data"] if k == key] for _, key, _ in chart["data"]}
    assert series == {"model": [0.5] * 4, "hod_binned": [0.25] * 4, "oracle_mean": [0.75] * 4}
    assert "eval/charts/rk_table" in run.tables
    assert any(k.startswith("_wandb/visualize/eval/charts/pk_ratio") for k in run.config)
    summary = run.summary
    assert summary["eval/model/pk_ratio_abs_err"] == 0.25
    assert summary["eval/oracle_mean/rk_mean"] == 0.9375
    assert summary["eval/margin/pk_ratio_abs_err"] == -0.125
    assert summary["eval/margin/rk_mean_large"] == 0.25
    assert summary["eval/model/above_1e+08/rk_mean"] == 0.5
    assert "eval/margin/k_max" not in summary


def test_validation_curves_reach_the_offline_run(tmp_path: Path):
    """FieldStatsCallback logs the validation P(k) and r(k) as the evaluation's tables."""
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand((16, 16, 16), generator=gen) ** 4
    pred = truth + 0.05 * torch.rand((16, 16, 16), generator=gen)
    logger = wandb_logger(save_dir=str(tmp_path), offline=True, project="test")
    trainer = SimpleNamespace(loggers=[logger], global_step=12)
    FieldStatsCallback()._log_curves(trainer, truth, pred, 20.0)
    logger.experiment.finish()

    run = read_run(tmp_path)
    k, pk_truth, pk_pred, _, r = (t.numpy() for t in cross_power_torch(truth, pred, 20.0))
    pk = run.tables["val/curves/pk"]
    assert pk["columns"] == ["k", "pk_truth", "pk_model", "ratio_model"]
    np.testing.assert_allclose(
        np.array(pk["data"]), np.column_stack([k, pk_truth, pk_pred, pk_pred / pk_truth]), rtol=1e-6
    )
    assert run.tables["val/curves/rk"]["columns"] == ["k", "r_model"]
    np.testing.assert_allclose(np.array(run.tables["val/curves/rk"]["data"])[:, 1], r, rtol=1e-6)
    assert run.history[0]["trainer/global_step"] == 12


@pytest.mark.parametrize("overrides", [["model=resnet3d", "loss=huber"]])
def test_config_is_flat_with_the_chosen_options(compose, overrides):
    cfg = compose(overrides)
    params = config_params(cfg)
    choices = (params["model"], params["loss"], params["sampler"])
    assert choices == ("resnet3d", "huber", "mass_bins")
    assert params["experiment"] == "smoke"
    assert params["sampler.bins"] == cfg.sampler.bins
    assert params["data.source.grid"] == cfg.data.source.grid
    assert params["model._target_"] == cfg.model._target_
    assert not any("/" in key or key.startswith("hydra") for key in params)
