"""Sweep aggregation on fake run directories, preemption-safe resume, and a real ``-m`` sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import ROOT, compose_train, mock_cache_dir, run_script

from dm2gal.sweep import aggregate, read_overrides
from dm2gal.train.runs import find_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    run: Path,
    overrides: list[str],
    results: dict | None = None,
    csv_rows: list[dict] | None = None,
    evaluation: dict | None = None,
) -> Path:
    """A fake Hydra run directory with the files aggregation reads."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text("{}")
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))
    if csv_rows is not None:
        (run / "csv").mkdir()
        with (run / "csv" / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", "step", "train/loss", "val/loss"])
            writer.writeheader()
            writer.writerows(csv_rows)
    if evaluation is not None:
        (run / "evaluation").mkdir()
        (run / "evaluation" / "metrics.json").write_text(json.dumps({"models": evaluation}))
    return run


@pytest.fixture
def fake_sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    make_run(
        root / "0",
        ["model=unet3d", "loss=mse"],
        results={
            "status": "completed",
            "global_step": 8,
            "metrics": {"val/loss": 0.25, "test/loss": 0.5, "model/log_rmse": 9.0},
        },
        evaluation={"model": {"log_rmse": 1.5, "rk_mean": 0.75}, "hod_binned": {"rk_mean": 0.5}},
    )
    make_run(
        root / "1",
        ["model=unet3d", "loss=huber"],
        results={"status": "failed", "error": "ValueError: config key 'data.crop'"},
    )
    make_run(root / "2", ["model=resnet3d", "loss=mse"])
    make_run(
        root / "10",
        ["model=resnet3d", "loss=huber"],
        csv_rows=[
            {"epoch": 0, "step": 3, "train/loss": 2.0, "val/loss": ""},
            {"epoch": 0, "step": 3, "train/loss": "", "val/loss": 1.25},
            {"epoch": 1, "step": 7, "train/loss": 1.0, "val/loss": ""},
        ],
    )
    (root / ".submitit" / "123_0" / ".hydra").mkdir(parents=True)
    (root / ".submitit" / "123_0" / ".hydra" / "overrides.yaml").write_text("[]")
    (root / ".submitit" / "123_0" / ".hydra" / "config.yaml").write_text("{}")
    return root


def test_aggregate_fake_sweep(fake_sweep: Path):
    table = aggregate(fake_sweep)
    assert table.column("run") == ["0", "1", "2", "10"]  # job order, .submitit ignored
    assert table.column("status") == ["ok", "failed", "failed", "incomplete"]
    assert table.column("model") == ["unet3d", "unet3d", "resnet3d", "resnet3d"]
    assert table.column("loss") == ["mse", "huber", "mse", "huber"]
    assert table.column("val/loss") == [0.25, None, None, 1.25]
    assert table.column("train/loss") == [None, None, None, 1.0]  # last logged value
    assert table.column("eval/model/log_rmse") == [1.5, None, None, None]
    assert table.column("eval/hod_binned/rk_mean") == [0.5, None, None, None]
    assert "model/log_rmse" not in table.columns  # evaluation comes from metrics.json only
    assert table.column("global_step") == [8, None, None, None]
    errors = table.column("error")
    assert errors[0] is None and "data.crop" in errors[1] and errors[2] == "no metrics"

    with table.csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "incomplete"]
    assert float(rows[0]["eval/model/rk_mean"]) == 0.75
    assert rows[1]["val/loss"] == ""
    markdown = table.markdown.read_text().splitlines()
    assert len(markdown) == 2 + 4
    assert markdown[0].startswith("| run | status | model | loss |")
    assert "| 0 | ok | unet3d | mse |" in markdown[2]
    assert table.plot.read_bytes()[:8] == PNG_MAGIC


def test_cli_writes_to_out_dir(fake_sweep: Path, tmp_path: Path):
    result = run_script("dm2gal.sweep", f"dir={fake_sweep}", f"out={tmp_path / 'report'}")
    assert "| 2 | failed | resnet3d | mse |" in result.stdout
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "sweep.csv",
        "sweep.md",
        "sweep.png",
    ]


def test_bad_inputs_name_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run or multirun directory not found"):
        find_runs(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="neither a run directory nor a folder of runs"):
        find_runs(tmp_path)
    (tmp_path / "r" / ".hydra").mkdir(parents=True)
    (tmp_path / "r" / ".hydra" / "overrides.yaml").write_text("a: 1")
    with pytest.raises(ValueError, match="overrides.yaml: expected a list"):
        read_overrides(tmp_path / "r")


class Requeued(Exception):
    """Stands in for submitit's requeue-and-exit."""


class SignalAtStep(L.Callback):
    """Sends SIGUSR1 to this process once, after optimiser step ``step`` (test helper)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow
def test_signal_checkpoints_mid_epoch_and_resume_completes(tmp_path: Path):
    """SIGUSR1 after step 2 of 2 x 3 steps: last.ckpt holds step 2 and the requeue handler runs;
    the rerun in the same directory resumes there and ends at exactly step 6."""
    overrides = [
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "test=false",
        "+callbacks.signal._target_=test_sweep.SignalAtStep",
        "+callbacks.signal.step=2",
    ]
    calls = []

    def requeue(signum, frame):
        calls.append(signum)
        raise Requeued

    from dm2gal.train.pipeline import train

    previous = signal.signal(signal.SIGUSR1, requeue)
    try:
        with pytest.raises(Requeued):
            train(compose_train(tmp_path, overrides))
        assert signal.getsignal(signal.SIGUSR1) is requeue  # handed back
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert calls == [signal.SIGUSR1]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2

    overrides[-1] = "+callbacks.signal.step=-1"
    train(compose_train(tmp_path, overrides))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["global_step"] == 6
    assert torch.load(last, weights_only=False)["global_step"] == 6


def sweep_env() -> dict[str, str]:
    """Environment for a sweep subprocess: offline W&B, a fresh run id, one thread."""
    env = {k: v for k, v in os.environ.items() if k != "DM2GAL_RUN_ID"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    return env


def wandb_records(path: Path):
    """Protobuf records of a ``.wandb`` transaction log: a 7-byte ``:W&B`` header, then
    LevelDB-log chunks (crc32, little-endian length, type 1 full / 2 first / 3 middle / 4 last)
    that never straddle a 32 KiB block."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, buf = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def wandb_run_record(run_dir: Path) -> dict:
    """Group, id, tags and config of the offline W&B run stored in ``run_dir/wandb``."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    out: dict = {"config": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(group=record.run.run_group, id=record.run.run_id)
            out["tags"] = list(record.run.tags)
        if kind in ("run", "config"):
            items = record.run.config.update if kind == "run" else record.config.update
            out["config"].update({item.key: json.loads(item.value_json) for item in items})
    return out


@pytest.mark.slow
def test_real_multirun_sweep(tmp_path: Path):
    """``python train.py -m`` with the basic launcher: two runs, W&B offline runs grouped by the
    sweep's id and carrying the flattened config, and a 2-row aggregation table."""
    sweep_dir = tmp_path / "sweep_abc"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "experiment=smoke",
        "logger=wandb",
        f"paths.data_dir={mock_cache_dir()}",
        f"hydra.sweep.dir={sweep_dir}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "loss=mse,huber",
    ]
    proc = subprocess.run(cmd, env=sweep_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = find_runs(sweep_dir)
    assert [r.name for r in runs] == ["0", "1"]
    for run, loss in zip(runs, ["mse", "huber"], strict=True):
        assert (run / "checkpoints" / "last.ckpt").is_file()
        record = wandb_run_record(run)
        assert record["group"] == "sweep_abc"
        assert record["id"] == (run / "wandb_id.txt").read_text()
        assert f"loss={loss}" in record["tags"]
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert record["config"]["loss/_target_"] == config["loss"]["_target_"]
        assert record["config"]["data/source/grid"] == config["data"]["source"]["grid"]
        assert record["config"]["optim/optimizer/lr"] == config["optim"]["optimizer"]["lr"]
    table = aggregate(sweep_dir)
    assert table.column("status") == ["ok", "ok"]
    assert table.column("loss") == ["mse", "huber"]
    assert all(v > 0 for v in table.column("val/loss"))
    assert all(v is not None for v in table.column("eval/model/rk_mean"))
