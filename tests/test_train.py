"""The training pipeline end to end: fast_dev_run per model, exact resume, train.py,
evaluate.py and python -m dm2gal.predict as a user runs them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT, mock_cache_dir, run_script

from dm2gal.data.crops import read_crop
from dm2gal.io.store import FieldStore
from dm2gal.train.build import build
from dm2gal.train.pipeline import summary_table

MODELS = {
    "unet3d": [],
    "resnet3d": ["model.channels=4", "model.blocks=1"],
    "twophase": ["loss=twophase", "model.channels=4"],
    "probabilistic": ["loss=nll", "model.channels=4"],
    # the paper's network needs 65^3 inputs with a 32-voxel guard beside the held-out cubes
    "paper_cnn": [
        "model.channels=2",
        "data.crop=1",
        "data.source.grid=160",
        "data.stride=8",
        "data.splits.units=voxels",
        "data.splits.test=[0,8]",
        "data.splits.val=[80,88]",
        "data.batch_size=2",
    ],
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "paper_cnn" else n for n in MODELS]
)
def test_fast_devrun_script(compose, name: str):
    cfg = compose([f"model={name}", "trainer.fast_dev_run=true", *MODELS[name]])
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def _fit(compose, tmp_path: Path, epochs: int, ckpt_path: str | None = None) -> L.LightningModule:
    cfg = compose(
        [
            # a schedule that does not depend on the run's length (the 1-epoch run stands for
            # an interrupted 2-epoch one)
            "optim=adamw",
            "trainer.deterministic=true",
            f"trainer.max_epochs={epochs}",
            "trainer.limit_train_batches=3",
            "callbacks=none",
        ]
    )
    cfg.trainer.default_root_dir = str(tmp_path)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    trainer.save_checkpoint(tmp_path / f"epochs{epochs}.ckpt")
    return module


def test_resume_gives_the_same_weights_as_an_uninterruptedrun_script(compose, tmp_path: Path):
    straight = _fit(compose, tmp_path / "a", epochs=2)
    _fit(compose, tmp_path / "b", epochs=1)
    resumed = _fit(compose, tmp_path / "c", epochs=2, ckpt_path=str(tmp_path / "b/epochs1.ckpt"))
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sigkill_after_the_first_epoch_then_resume_is_exact(tmp_path: Path):
    args = [
        "experiment=smoke",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=4",
        "trainer.deterministic=true",
        "logger=csv",
        "test=false",
        f"paths.data_dir={mock_cache_dir()}",
        # no epoch after the first improves by 1e9: the plateau scheduler halves the learning
        # rate after epochs 1 and 2, so a resume that loses a scheduler step shows
        "optim=adamw",
        "optim.scheduler.patience=0",
        "+optim.scheduler.threshold_mode=abs",
        "+optim.scheduler.threshold=1e9",
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_script("train.py", *args, f"hydra.run.dir={straight}", cwd=tmp_path)

    last = killed / "checkpoints" / "last.ckpt"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip

    def epoch0_done() -> bool:  # last.ckpt written, then epoch 0's training-loss row
        rows = _csv_rows(killed) if last.is_file() else []
        return any(row["epoch"] == "0" and row.get("train/loss_epoch") for row in rows)

    deadline = time.monotonic() + 600
    while not epoch0_done() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert torch.load(last, weights_only=False)["global_step"] == 4  # after epoch 0
    before = _csv_rows(killed)

    run_script("train.py", *args, f"hydra.run.dir={killed}", f"ckpt_path={last}", cwd=tmp_path)
    a, b = (json.loads((run / "results.json").read_text()) for run in (straight, killed))
    assert b["status"] == "completed" and b["global_step"] == a["global_step"] == 12
    assert b["metrics"] == a["metrics"]  # bit-identical floats
    ca, cb = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
              for run in (straight, killed))  # fmt: skip
    assert ca["lr_schedulers"] == cb["lr_schedulers"]
    assert [g["lr"] for g in cb["optimizer_states"][0]["param_groups"]] == [1e-3 / 4]
    for name, weight in ca["state_dict"].items():
        assert torch.equal(weight, cb["state_dict"][name]), name
    rows = _csv_rows(killed)
    assert rows == _csv_rows(straight)  # the pre-crash rows kept, none twice
    epoch0 = [row for row in before if row["epoch"] == "0"]
    assert len(epoch0) == 3 and rows[:3] == epoch0


@pytest.mark.slow
def test_train_then_evaluate_as_a_user(tmp_path: Path):
    data_dir = mock_cache_dir()
    run_script(
        "train.py",
        "experiment=smoke",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        cwd=tmp_path,
    )
    (run,) = [p.parent.parent for p in tmp_path.glob("smoke/*/*/.hydra/config.yaml")]
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (
        list((run / "checkpoints").glob("epoch*.ckpt"))
        and (run / "checkpoints/last.ckpt").is_file()
    )
    assert list((run / "wandb").glob("offline-run-*")), "no offline W&B run"
    assert (run / "csv" / "metrics.csv").is_file()
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    hods = {f"hod_{h}_{k}" for h in ("binned", "binned_env", "decorated") for k in ("mean", "draw")}
    assert {"model", "model_calibrated", *hods} <= set(metrics["models"])
    fitted = json.loads((run / "evaluation" / "hods.json").read_text())
    assert fitted["binned_env"]["env_radius"] in (1.0, 2.0, 4.0, 8.0)
    # the mock's physical limit beside them, and scores per k band
    assert {"oracle_mean", "oracle_draw"} <= set(metrics["models"])
    assert list(metrics["bands"]) == ["large", "intermediate", "small", "rest"]
    assert metrics["models"]["oracle_mean"]["decorrelation_ratio_large"] == 1.0
    assert "pk_ratio_abs_err_large" in metrics["models"]["model"]
    above = json.loads((run / "evaluation" / "above_1e+08" / "metrics.json").read_text())
    assert {"model", "hod_binned_mean", "hod_binned_draw"} <= set(above["models"])
    png = (run / "evaluation" / "pk.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000

    out = tmp_path / "again"
    (out / "evaluation").mkdir(parents=True)
    (out / "evaluation" / "limits.md").write_text("an earlier evaluation's file")
    printed = run_script(
        "evaluate.py",
        f"run_dir={run}",
        f"out_dir={out}",
        "evaluation.realisations=2",
        "evaluation.hod_draws=2",
        cwd=tmp_path,
    ).stdout
    # the run's table and the folder it wrote, which holds this evaluation's files only
    assert "| field (mean ± std over the realisations) |" in printed
    assert f"wrote {out / 'evaluation'}" in printed
    assert not (out / "evaluation" / "limits.md").exists()
    again = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"model", "hod_zheng07_mean", "hod_zheng07_draw", *hods} <= set(again["models"])
    # two further whole-box universes of the run's mock (seeds 1000, 1001), cached beside it
    real = json.loads((out / "evaluation" / "realisations.json").read_text())
    fields = {"model", "model_calibrated", "oracle_mean", "oracle_draw", *hods}
    fields |= {"hod_zheng07_mean", "hod_zheng07_draw"}
    assert set(real) == fields
    for field in fields:
        assert {"pk_ratio_abs_err", "rk_mean_large", "bk_ratio_abs_err"} <= set(real[field])
        for entry in real[field].values():
            assert len(entry["values"]) == 2 and entry["std"] >= 0
    assert len(real["hod_binned_draw"]["rk_mean"]["draws"][0]) == 2
    assert len(list(data_dir.glob("mock/*"))) >= 3
    assert "| model | hod_binned_mean |" in (out / "evaluation" / "realisations.md").read_text()
    # the same checkpoint and data give the same prediction
    assert again["models"]["model"]["total_mass_rel_err"] == pytest.approx(
        metrics["models"]["model"]["total_mass_rel_err"], rel=1e-5
    )

    # the whole box, predicted into a field store, holds the evaluation's test-region prediction
    run_script("dm2gal.predict", f"run_dir={run}", f"out={tmp_path / 'box'}", "tile=16")
    box = FieldStore(tmp_path / "box")
    evaluated = FieldStore(run / "evaluation" / "fields")
    start, side = evaluated.meta()["attrs"]["region_start"], evaluated.grid
    for name, model in (("stellar", "model"), ("stellar_calibrated", "model_calibrated")):
        cut = read_crop(box.read(name), start, side)
        np.testing.assert_allclose(cut, evaluated.read(model), rtol=1e-5, atol=1e-3)
    assert box.field_meta("stellar")["checkpoint"].endswith(".ckpt")


def test_fast_dev_run_on_tng_layout_files(compose, tmp_path: Path):
    from tng_layout import make_pair

    make_pair(tmp_path / "TNG100", box_kpc=50_000.0)
    cfg = compose(
        [
            "data=tng100",
            f"data.root={tmp_path / 'TNG100'}",
            "data.grid=64",
            "data.source.box=50.0",
            "data.crop=8",
            "data.splits.preset=null",
            "data.splits.test=[0,12]",
            "data.splits.val=[32,44]",
            "data.stride=4",
            "trainer.fast_dev_run=true",
            "logger=csv",
        ],
        tiny=False,
    )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert datamodule.store.grid == 64
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_missing_data_root_names_the_key(compose):
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match="root"):
        build(compose(["data=tng100", "logger=csv"], tiny=False))


def test_summary_table_rows_columns_and_realisations(tmp_path: Path):
    metrics = {
        "val/rk_mean": 0.5,  # a training metric: not a field
        "hod_binned_mean/pk_ratio_abs_err": 0.181,
        "hod_binned_mean/total_mass_rel_err": -0.11,
        "model/pk_ratio_abs_err": 0.254,
        "model/total_mass_rel_err": -0.51,
        "model_calibrated/pk_ratio_abs_err": 0.151,
        "model_calibrated/total_mass_rel_err": -0.06,
        "model_calibrated/above_1e+08/pk_ratio_abs_err": 9.0,  # the paper's scoring: left out
    }
    lines = summary_table(metrics, tmp_path).splitlines()
    assert lines[0] == "| field (test region) | P err | total M* |"
    assert lines[2:5] == [
        "| model_calibrated (headline) | 0.151 | -6.0% |",
        "| model | 0.254 | -51.0% |",
        "| hod_binned_mean | 0.181 | -11.0% |",
    ]
    assert lines[-1] == f"run directory: {tmp_path.resolve()}"
    assert len(lines) == 6

    realisations = {
        "model_calibrated": {
            "rk_mean_large": {"mean": 0.9, "std": 0.01, "values": [0.89, 0.91]},
            "total_mass_rel_err": {"mean": 0.02, "std": 0.005, "values": [0.015, 0.025]},
        },
        "oracle_mean": {"rk_mean_large": {"mean": 0.95, "std": 0.0, "values": [0.95, 0.95]}},
    }
    lines = summary_table(metrics, tmp_path, realisations).splitlines()
    assert lines[0] == "| field (mean ± std over the realisations) | r k<=1 | total M* |"
    assert lines[2:4] == [
        "| model_calibrated (headline) | 0.900 ± 0.010 | +2.0% ± 0.5% |",
        "| oracle_mean | 0.950 ± 0.000 |  |",
    ]


def test_summary_table_heads_with_a_probabilistic_networks_mean(tmp_path: Path):
    """Means first (network, HODs, oracle), then draws in the same order: like beside like."""
    metrics = {
        "model_calibrated/pk_ratio_abs_err": 0.6,
        "model_draw/pk_ratio_abs_err": 0.4,
        "model_mean/pk_ratio_abs_err": 0.14,
        "hod_binned_draw/pk_ratio_abs_err": 0.21,
        "hod_binned_mean/pk_ratio_abs_err": 0.26,
        "oracle_draw/pk_ratio_abs_err": 0.1,
        "oracle_mean/pk_ratio_abs_err": 0.3,
    }
    lines = summary_table(metrics, tmp_path).splitlines()
    assert lines[2:9] == [
        "| model_mean (headline) | 0.140 |",
        "| model_calibrated | 0.600 |",
        "| hod_binned_mean | 0.260 |",
        "| oracle_mean | 0.300 |",
        "| model_draw | 0.400 |",
        "| hod_binned_draw | 0.210 |",
        "| oracle_draw | 0.100 |",
    ]
