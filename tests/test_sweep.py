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
from matplotlib.figure import Figure
from wandb_offline import read_run

from dm2gal.eval.headline import read_columns
from dm2gal.sweep import aggregate
from dm2gal.sweep.plots import plot_curves
from dm2gal.sweep.runs import RunFileError, read_overrides
from dm2gal.train.runs import find_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


CONFIG = {
    "optimized_metric": "val/pk_ratio_abs_err",
    "callbacks": {"model_checkpoint": {"mode": "min"}},
    "logger": {"wandb": {"project": "dm2gal", "group": None}},
}


def make_run(
    run: Path,
    overrides: list[str],
    results: dict | None = None,
    csv_rows: list[dict] | None = None,
    evaluation: dict | None = None,
) -> Path:
    """A fake Hydra run directory with the files aggregation reads; with ``evaluation``, also
    the report's ``pk.csv`` and ``rk.csv`` (flat curves at each field's ``rk_mean``)."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
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
        k = [0.5, 1.0, 2.0]
        for stem, prefix in (("pk", "ratio_"), ("rk", "r_")):
            header = ["k", *(f"{prefix}{name}" for name in evaluation)]
            rows = [[x, *(v.get("rk_mean", 1.0) for v in evaluation.values())] for x in k]
            with (run / "evaluation" / f"{stem}.csv").open("w", newline="") as f:
                csv.writer(f).writerows([header, *rows])
    return run


@pytest.fixture
def fake_sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    hod = {"rk_mean": 0.5, "pk_ratio_abs_err": 0.375, "k_max": 4.0}
    oracle = {"rk_mean": 0.875, "pk_ratio_abs_err": 0.125, "k_max": 4.0}
    make_run(
        root / "0",
        ["model=unet3d", "loss=mse"],
        results={
            "status": "completed",
            "global_step": 8,
            "metrics": {
                "val/loss": 0.25,
                "val/pk_ratio_abs_err": 0.5,
                "test/loss": 0.5,
                "model/log_rmse": 9.0,
            },
        },
        evaluation={
            "model": {"log_rmse": 1.5, "rk_mean": 0.75, "pk_ratio_abs_err": 0.25, "k_max": 4.0},
            "hod_binned": hod,
            "oracle_mean": oracle,
        },
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
        results={
            "status": "completed",
            "global_step": 8,
            "metrics": {"val/loss": 1.25, "val/pk_ratio_abs_err": 0.25},
        },
        evaluation={
            "model": {"log_rmse": 2.5, "rk_mean": 0.625, "pk_ratio_abs_err": 0.5, "k_max": 4.0},
            "hod_binned": hod,
            "oracle_mean": oracle,
        },
    )
    (root / ".submitit" / "123_0" / ".hydra").mkdir(parents=True)
    (root / ".submitit" / "123_0" / ".hydra" / "overrides.yaml").write_text("[]")
    (root / ".submitit" / "123_0" / ".hydra" / "config.yaml").write_text("{}")
    return root


def test_aggregate_fake_sweep(fake_sweep: Path):
    table = aggregate(fake_sweep)
    assert table.column("run") == ["0", "1", "2", "10"]  # job order, .submitit ignored
    assert table.column("status") == ["ok", "failed", "failed", "ok"]
    assert table.column("model") == ["unet3d", "unet3d", "resnet3d", "resnet3d"]
    assert table.column("loss") == ["mse", "huber", "mse", "huber"]
    assert table.column("val/loss") == [0.25, None, None, 1.25]
    assert table.column("eval/model/log_rmse") == [1.5, None, None, 2.5]
    assert table.column("eval/hod_binned/rk_mean") == [0.5, None, None, 0.5]
    # network minus HOD: 0.75 - 0.5 and 0.25 - 0.375; k_max is a setting, not a score
    assert table.column("eval/margin/rk_mean") == [0.25, None, None, 0.125]
    assert table.column("eval/margin/pk_ratio_abs_err") == [-0.125, None, None, 0.125]
    assert "eval/margin/k_max" not in table.columns
    assert "model/log_rmse" not in table.columns  # evaluation comes from metrics.json only
    assert table.column("global_step") == [8, None, None, 8]
    errors = table.column("error")
    assert errors[0] is None and "data.crop" in errors[1] and errors[2] == "no metrics"
    assert (table.objective, table.mode) == ("val/pk_ratio_abs_err", "min")

    with table.csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "ok"]
    assert float(rows[0]["eval/model/rk_mean"]) == 0.75
    assert rows[1]["val/loss"] == ""
    assert set(rows[0]) == set(table.columns)  # every column kept in the CSV

    # the Markdown view: swept keys and headline scores, references once, sorted by objective
    markdown = table.markdown.read_text().splitlines()
    assert markdown[0] == (
        "| run | field | status | model | loss | val/pk_ratio_abs_err | pk_ratio_abs_err "
        "| rk_mean |"
    )
    assert markdown[2:] == [
        "|  | hod_binned | reference |  |  |  | 0.375 | 0.5 |",
        "|  | oracle_mean | reference |  |  |  | 0.125 | 0.875 |",
        "| 10 | model | ok | resnet3d | huber | 0.25 | 0.5 | 0.625 |",
        "| 0 | model | ok | unet3d | mse | 0.5 | 0.25 | 0.75 |",
        "| 1 |  | failed | unet3d | huber |  |  |  |",
        "| 2 |  | failed | resnet3d | mse |  |  |  |",
    ]
    assert table.plot.read_bytes()[:8] == PNG_MAGIC


def test_headline_view_keeps_bands_and_drops_constant_overrides(tmp_path: Path):
    """Band scores replace the whole-range one; an override every run shares is not shown."""
    bands = {"rk_mean": 0.5, "rk_mean_large": 0.875, "rk_mean_small": 0.25, "log_rmse": 1.0}
    for i, model in enumerate(["unet3d", "resnet3d"]):
        make_run(
            tmp_path / str(i),
            ["experiment=smoke", f"model={model}"],
            results={"status": "completed", "metrics": {"val/pk_ratio_abs_err": 1.0 - i}},
            evaluation={"model": bands},
        )
    table = aggregate(tmp_path)
    header = table.markdown.read_text().splitlines()[0]
    assert header == (
        "| run | field | status | model | val/pk_ratio_abs_err | rk_mean_large | rk_mean_small |"
    )
    assert table.column("experiment") == ["smoke", "smoke"]


def test_sweep_table_goes_to_an_offline_wandb_run(fake_sweep: Path, tmp_path: Path):
    """The W&B run of the sweep: group of the sweep, both tables with their columns."""
    out = tmp_path / "report"
    table = aggregate(fake_sweep, out, wandb=True)
    run = read_run(out)
    assert (run.group, run.job_type) == ("multirun", "sweep")
    assert run.tables["sweep/runs"]["columns"] == table.columns
    assert [row[0] for row in run.tables["sweep/runs"]["data"]] == ["0", "1", "2", "10"]
    headline = run.tables["sweep/headline"]
    assert headline["columns"] == table.markdown.read_text().split("\n")[0].strip("| ").split(" | ")
    assert [row[1] for row in headline["data"][:2]] == ["hod_binned", "oracle_mean"]


def test_cli_writes_to_out_dir(fake_sweep: Path, tmp_path: Path):
    out = tmp_path / "report"
    result = run_script("dm2gal.sweep", f"dir={fake_sweep}", f"out={out}", "wandb=false")
    assert "| 2 |  | failed | resnet3d | mse |" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.md", "sweep.png"]


def test_bad_inputs_name_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run or multirun directory not found"):
        find_runs(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="neither a run directory nor a folder of runs"):
        find_runs(tmp_path)
    (tmp_path / "r" / ".hydra").mkdir(parents=True)
    (tmp_path / "r" / ".hydra" / "overrides.yaml").write_text("a: 1")
    with pytest.raises(RunFileError, match="overrides.yaml: expected a list"):
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
        record = read_run(run)
        assert record.group == "sweep_abc"
        assert record.id == (run / "wandb_id.txt").read_text()
        assert f"loss={loss}" in record.tags
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        # the chosen options by group name, the settings by dotted path
        assert (record.config["loss"], record.config["model"]) == (loss, "unet3d")
        assert record.config["loss._target_"] == config["loss"]["_target_"]
        assert record.config["data.source.grid"] == config["data"]["source"]["grid"]
        assert record.config["optim.optimizer.lr"] == config["optim"]["optimizer"]["lr"]
        assert record.config["sampler.bins"] == config["sampler"]["bins"]
        # the evaluation's curves as tables, and its headline scores in the summary
        pk = read_columns(run / "evaluation" / "pk.csv")
        assert record.tables["eval/curves/pk"]["columns"] == list(pk)
        assert {"eval/model/pk_ratio_abs_err", "eval/margin/rk_mean"} <= set(record.summary)


def test_plot_draws_each_runs_headline_field(tmp_path: Path):
    """A probabilistic run has no ``model`` column: its curve is ``model_mean``'s, its bars the
    ``eval/model_mean/...`` scores."""
    scores = {"rk_mean": 0.75, "pk_ratio_abs_err": 0.25, "k_max": 4.0}
    hod = {"rk_mean": 0.5, "pk_ratio_abs_err": 0.375, "k_max": 4.0}
    for i in range(2):
        make_run(
            tmp_path / str(i),
            [f"seed={i}"],
            results={"status": "ok", "metrics": {"val/pk_ratio_abs_err": 0.5}},
            evaluation={"model_mean": scores, "model_draw": hod, "hod_binned": hod},
        )
    table = aggregate(tmp_path)
    fig = Figure()
    ax = fig.subplots()
    assert plot_curves(ax, table, "rk", "r_")
    labels = [line.get_label() for line in ax.get_lines()]
    assert "seed=0 (model_mean)" in labels and "seed=1 (model_mean)" in labels
    assert [line.get_ydata()[0] for line in ax.get_lines() if "seed" in line.get_label()] == [
        0.75,
        0.75,
    ]
    assert table.plot.read_bytes()[:8] == PNG_MAGIC
