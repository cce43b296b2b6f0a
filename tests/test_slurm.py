"""Sweeps through ``hydra/launcher=slurm`` on a real SLURM cluster (marker ``slurm``).

Start one with ``bash ../shared/tools/slurm/start_slurm.sh`` (root) and export ``SLURM_CONF``
before running pytest; without a reachable cluster these tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from conftest import ROOT, compose_train, mock_cache_dir
from hydra.utils import instantiate
from test_sweep import sweep_env

from dm2gal.sweep import aggregate
from dm2gal.train.runs import find_runs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SMOKE = [
    "experiment=smoke",
    "logger=csv",
    "trainer.limit_val_batches=1",
]


def cluster_problem() -> str | None:
    """Why no SLURM cluster can be used here, or ``None``."""
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set (start ../shared/tools/slurm/start_slurm.sh and export it)"
    if shutil.which("sinfo") is None:
        return "sinfo not found: no SLURM client installed"
    proc = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory):
    """Skip without a cluster; build the smoke mock once so the jobs only read it."""
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    cfg = compose_train(tmp_path_factory.mktemp("mock"))
    instantiate(cfg.data, context=0, sampler=None).prepare_data()


def slurm_sweep(
    sweep_dir: Path, *overrides: str, timeout: float = 420
) -> subprocess.CompletedProcess:
    """``train.py -m hydra/launcher=slurm`` on partition debug, 1 CPU and no GPU per job."""
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=null",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={mock_cache_dir()}",
        *SMOKE,
        *overrides,
    ]
    env = sweep_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


class SleepPerStep(L.Callback):
    """Makes each optimiser step last ``seconds`` longer, so a job outlives its time limit."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def test_two_by_two_sweep(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    proc = slurm_sweep(
        sweep_dir,
        "hydra.launcher.timeout_min=10",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "loss=mse,huber",
        "sampler.bins=4,8",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = find_runs(sweep_dir)
    assert len(runs) == 4
    for run in runs:
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert (run / "csv" / "metrics.csv").is_file()
        assert (run / "evaluation" / "metrics.json").is_file()
        assert json.loads((run / "results.json").read_text())["global_step"] == 2
    table = aggregate(sweep_dir)
    assert len(table.rows) == 4
    assert table.column("status") == ["ok"] * 4
    assert sorted(zip(table.column("loss"), table.column("sampler.bins"), strict=True)) == [
        ("huber", "4"),
        ("huber", "8"),
        ("mse", "4"),
        ("mse", "8"),
    ]
    assert all(v > 0 for v in table.column("val/loss"))


def test_timeout_requeues_and_failure_is_isolated(tmp_path: Path):
    """Job 0 (2 x 30 steps of >= 1.5 s) outlives its 2-minute limit: SIGUSR1 30 s before the end
    (up to 30 s earlier: slurmctld checks limits every 30 s) arrives mid-training, so it saves
    last.ckpt at that step and requeues; the rerun resumes and ends at exactly step
    60. Job 1 raises at once (a crop the UNet rejects) without stopping job 0."""
    sweep_dir = tmp_path / "sweep"
    proc = slurm_sweep(
        sweep_dir,
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=30",
        "hydra.launcher.max_num_timeout=3",
        "sampler.samples_per_epoch=120",
        "trainer.max_epochs=2",
        "+callbacks.sleep._target_=test_slurm.SleepPerStep",
        "+callbacks.sleep.seconds=1.5",
        "data.crop=8,7",
        timeout=600,
    )
    assert proc.returncode != 0  # the multirun reports the failed job once all have ended
    job0, job1 = find_runs(sweep_dir)
    results = json.loads((job0 / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["global_step"] == 60
    log = (job0 / "train.log").read_text()
    saved = [line for line in log.splitlines() if "last.ckpt at global step" in line]
    assert saved, log[-3000:]
    step = int(saved[0].rsplit(" ", 1)[1])
    assert 0 < step < 60
    assert "resuming from" in log

    table = aggregate(sweep_dir)
    assert table.column("status") == ["ok", "failed"]
    assert table.column("data.crop") == ["8", "7"]
    assert "data.crop" in table.column("error")[1]
    assert table.column("global_step") == [60, None]
