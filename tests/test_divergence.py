"""A diverging training run stops at the first non-finite loss or gradient, with one line naming
the step and the likely cause, ``results.json`` status ``diverged`` and the last finite
checkpoint kept; or, with ``nonfinite.action=skip``, skips the batch (counted and logged)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, compose_train, mock_cache_dir

from dm2gal.errors import ConfigError
from dm2gal.train.build import build
from dm2gal.train.callbacks import DivergedError, NonFiniteGuard
from dm2gal.train.checkpoints import load_checkpoint
from dm2gal.train.pipeline import run


class Poison(L.Callback):
    """Make the input of the training batches with index in ``batches`` NaN (``where="input"``),
    or, with ``where="gradient"``, the gradient of the first parameter only (finite loss); keep
    a copy of the weights before and after each poisoned step."""

    def __init__(self, batches: set[int], where: str = "input"):
        self.batches, self.where = batches, where
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.module = pl_module
        if batch_idx not in self.batches:
            return
        self.before.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})
        if self.where == "input":
            batch["input"].fill_(math.nan)
        else:
            first = next(pl_module.net.parameters())
            self.handle = first.register_hook(lambda g: torch.full_like(g, math.inf))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx not in self.batches:
            return
        self.after.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})
        if self.where == "gradient":
            self.handle.remove()


def _fit(tmp_path: Path, poison: Poison, overrides: list[str]) -> L.Trainer:
    cfg = compose_train(
        tmp_path,
        ["callbacks=none", "optim=adamw", "trainer.limit_train_batches=4", *overrides],
    )
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(poison)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def test_stop_names_the_first_bad_step_and_keeps_the_weights(tmp_path: Path):
    poison = Poison({2})
    with pytest.raises(DivergedError) as raised:
        _fit(tmp_path, poison, [])
    message = str(raised.value)
    assert raised.value.step == 2
    assert message.startswith("training diverged at global step 2 (epoch 0, batch 2)")
    assert "non-finite loss nan" in message
    assert "optim.optimizer.lr" in message and "trainer.precision=32-true" in message
    assert "\n" not in message
    # the bad step was not applied
    for name, weight in poison.module.net.named_parameters():
        assert torch.equal(weight, poison.before[0][name]), name


def test_a_non_finite_gradient_with_a_finite_loss_stops_too(tmp_path: Path):
    with pytest.raises(DivergedError, match=r"global step 1 .*non-finite gradients \(the loss"):
        _fit(tmp_path, Poison({1}, where="gradient"), [])


def test_skip_drops_the_batch_counts_and_logs_it(tmp_path: Path):
    poison = Poison({1, 3})
    trainer = _fit(tmp_path, poison, ["nonfinite.action=skip"])
    guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteGuard))
    assert guard.skipped == 2
    assert trainer.global_step == 4  # the scheduler and the step count go on
    for before, after in zip(poison.before, poison.after, strict=True):
        for name, weight in before.items():
            assert torch.equal(weight, after[name]), name  # the optimiser changed nothing
    metrics = next(tmp_path.glob("**/metrics.csv"))
    with open(metrics) as f:
        logged = [r["train/skipped_batches"] for r in csv.DictReader(f)]
    assert max(float(v) for v in logged if v) == 2.0


def test_skip_stops_after_max_consecutive_bad_batches(tmp_path: Path):
    overrides = ["nonfinite.action=skip", "nonfinite.max_consecutive=3"]
    with pytest.raises(DivergedError, match=r"global step 2 .*\(3 batches in a row\)"):
        _fit(tmp_path, Poison({0, 1, 2, 3}), overrides)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"action": "ignore", "max_consecutive": 1}, "action"),
        ({"action": "skip", "max_consecutive": 0}, "max_consecutive"),
        ({"action": "skip", "max_consecutive": 2.5}, "max_consecutive"),
    ],
)
def test_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"^nonfinite.{key}: expected "):
        NonFiniteGuard(**kwargs)


# the case: the smoke run with an absurd learning rate (epoch 0 trains, epoch 1 diverges)
LR_1E6 = ["optim.optimizer.lr=1e6", "trainer.max_epochs=3", "test=false", "callbacks=none"]


def test_learning_rate_1e6_stops_with_status_diverged_and_a_finite_checkpoint(tmp_path: Path):
    cfg = compose_train(tmp_path, LR_1E6)
    with pytest.raises(DivergedError) as raised:
        run(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"the last finite checkpoint is kept: {last}" in str(raised.value)
    assert "likely cause: a learning rate too high" in str(raised.value)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "diverged"
    assert results["global_step"] == raised.value.step > 0
    assert results["error"] == f"DivergedError: {raised.value}"
    state = load_checkpoint(last)
    assert state["global_step"] <= raised.value.step  # the steps taken before the bad one
    for name, weight in state["state_dict"].items():
        assert torch.isfinite(weight).all(), name


@pytest.mark.slow
def test_train_py_prints_one_line_without_a_traceback(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=smoke",
            "logger=csv",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            *LR_1E6,
            f"hydra.run.dir={tmp_path}",
            f"paths.data_dir={mock_cache_dir()}",
        ],
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("error: training diverged at global step ")
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "diverged"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
