"""FieldStatsCallback: validation-region statistics during training."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dm2gal.data.crops import read_crop
from dm2gal.infer.predict import PredictOptions, predict_region
from dm2gal.stats import pylians as stats
from dm2gal.train.build import build
from dm2gal.train.callbacks import (
    METRICS,
    EMAWeights,
    FieldStatsCallback,
    ema_decay,
    field_scores,
)

BOX = 20.0


def _field(seed: int, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.lognormal(0.0, 1.0, (n, n, n)).astype(np.float32) * 1e9


def test_field_scores_match_the_pylians_summary():
    truth, pred = _field(0), _field(1)
    ref = stats.summary(truth, pred, BOX, k_max=1.0)
    got = field_scores(torch.from_numpy(truth), torch.from_numpy(pred), BOX, k_max=1.0)
    assert got["val/pk_ratio_abs_err"] == pytest.approx(ref["pk_ratio_abs_err"], rel=1e-4)
    assert got["val/rk_mean"] == pytest.approx(ref["rk_mean"], rel=1e-4, abs=1e-6)
    assert got["val/total_mass_rel_err"] == pytest.approx(ref["total_mass_rel_err"], rel=1e-6)


def test_field_scores_of_exact_scaled_and_empty_predictions():
    truth = torch.from_numpy(_field(2))
    same = field_scores(truth, truth.clone(), BOX)
    assert same["val/pk_ratio_abs_err"] == pytest.approx(0.0, abs=1e-6)
    assert same["val/rk_mean"] == pytest.approx(1.0, abs=1e-6)
    assert same["val/total_mass_rel_err"] == pytest.approx(0.0, abs=1e-7)
    # twice the mass everywhere: the same overdensity, twice the total
    double = field_scores(truth, 2 * truth, BOX)
    assert double["val/pk_ratio_abs_err"] == pytest.approx(0.0, abs=1e-6)
    assert double["val/total_mass_rel_err"] == pytest.approx(1.0, rel=1e-6)
    empty = field_scores(truth, torch.zeros_like(truth), BOX)
    assert empty == {
        "val/total_mass_rel_err": -1.0,
        "val/pk_ratio_abs_err": 1.0,
        "val/rk_mean": 0.0,
    }
    undefined = field_scores(torch.zeros_like(truth), truth, BOX)
    assert sorted(undefined) == sorted(METRICS)
    assert all(math.isnan(v) for v in undefined.values())


@pytest.mark.parametrize(
    "kwargs", [{"every_n_epochs": 0}, {"tile": 1.5}, {"batch_size": True}, {"k_max": -1.0}]
)
def test_bad_arguments_name_the_option(kwargs):
    with pytest.raises(ValueError, match=f"FieldStatsCallback.{next(iter(kwargs))}"):
        FieldStatsCallback(**kwargs)


def test_two_epoch_fit_logs_the_statistics_and_slices(compose, tmp_path: Path):
    # the smoke mock's validation cube, voxels [44, 56), holds 28 occupied voxels and keeps the
    # 8-voxel guard from the test cube [0, 12)
    cfg = compose(["trainer.max_epochs=2"])
    assert "field_stats" in cfg.callbacks
    datamodule, module, trainer = build(cfg)
    assert any(isinstance(cb, FieldStatsCallback) for cb in trainer.callbacks)
    trainer.fit(module, datamodule=datamodule)

    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {name: [float(row[name]) for row in rows if row.get(name)] for name in METRICS}
    for name, values in logged.items():
        assert len(values) == 2, name  # one per epoch
        assert all(math.isfinite(v) for v in values), (name, values)
    for epoch in (0, 1):
        png = tmp_path / "val_slices" / f"epoch_{epoch:03d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "val_slices" / "epoch_002.png").exists()

    # the last epoch's numbers are those of the final weights, measured again with Pylians
    region = datamodule.splits.val
    pred = predict_region(
        module.net,
        [datamodule.store.read(name) for name in datamodule.inputs],
        region,
        datamodule.transform.forward_input,
        datamodule.transform.inverse_target,
        PredictOptions(tile=cfg.evaluation.tile, progress=False),
    )
    truth = read_crop(datamodule.store.read(datamodule.target), region.start, region.size[0])
    ref = stats.summary(truth, pred, region.size[0] * datamodule.box / datamodule.grid)
    assert logged["val/total_mass_rel_err"][-1] == pytest.approx(
        ref["total_mass_rel_err"], rel=1e-4
    )
    assert logged["val/pk_ratio_abs_err"][-1] == pytest.approx(ref["pk_ratio_abs_err"], rel=1e-3)
    assert logged["val/rk_mean"][-1] == pytest.approx(ref["rk_mean"], rel=1e-3)


class _Record(L.Callback):
    """The module's weights after every optimiser step (before EMAWeights, placed after it)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def test_ema_weights_are_the_hand_computed_average_after_two_steps(compose, tmp_path: Path):
    cfg = compose(["callbacks=none", "model.channels=4", "trainer.limit_train_batches=2"])
    datamodule, module, trainer = build(cfg)
    record, ema = _Record(), EMAWeights(decay=0.5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[record, ema, checkpoint],
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    w1, w2 = record.states
    # the first update copies w1; the second has decay min(0.5, (1 + 1) / (10 + 1)) = 2 / 11
    d = ema_decay(0.5, torch.tensor(1.0))
    assert float(d) == pytest.approx(2 / 11)
    floats = [k for k, v in w1.items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats)  # BatchNorm statistics are averaged too
    average = module.state_dict()
    for key in floats:
        expected = d * w1[key] + (1 - d) * w2[key]
        torch.testing.assert_close(average[key], expected, rtol=1e-5, atol=1e-7, msg=key)
        assert not torch.equal(w1[key], w2[key]) or "running" not in key

    # the checkpoint holds the average; testing from it keeps the average (not the trained w2)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    for key in floats:
        torch.testing.assert_close(state["state_dict"][key], average[key], msg=key)
        torch.testing.assert_close(state["current_model_state"][key], w2[key], msg=key)
    module.load_state_dict(state["current_model_state"])
    trainer.test(module, datamodule=datamodule, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    for key in floats:
        torch.testing.assert_close(module.state_dict()[key], average[key], msg=key)


@pytest.mark.parametrize("decay", [1.0, -0.1, True])
def test_ema_decay_out_of_range_names_the_option(decay):
    with pytest.raises(ValueError, match="EMAWeights.decay"):
        EMAWeights(decay=decay)
