"""``hydra/launcher=slurm_cpu`` on a real SLURM cluster (marker ``slurm``): a grid sweep and an
Optuna study with a failing trial, each trial a 1-CPU job with no GPU request.

Start a cluster with ``bash ../shared/tools/slurm/start_slurm.sh`` (root) and export
``SLURM_CONF`` before running pytest; without one these tests skip with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, mock_cache_dir
from test_optuna import STUDY, check_study
from test_slurm import SMOKE, cluster  # noqa: F401  (module fixture: skip without a cluster)
from test_sweep import sweep_env

from dm2gal.sweep import aggregate
from dm2gal.train.runs import find_runs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def cpu_sweep(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``train.py -m hydra/launcher=slurm_cpu`` on partition debug with 1 CPU per job."""
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={mock_cache_dir()}",
        *overrides,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=sweep_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_grid_sweep_on_cpu_partition(tmp_path: Path):
    sweep_dir = tmp_path / "grid"
    proc = cpu_sweep(sweep_dir, *SMOKE, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                     "loss=mse,huber")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(find_runs(sweep_dir)) == 2
    assert aggregate(sweep_dir).column("status") == ["ok", "ok"]
    scripts = list((sweep_dir / ".submitit").glob("*/*_submission.sh"))
    options = [line for s in scripts for line in s.read_text().splitlines() if "#SBATCH" in line]
    assert options and not [o for o in options if "gpu" in o or "gres" in o or "--mem" in o]


def test_optuna_study_as_slurm_jobs(tmp_path: Path):
    sweep_dir = tmp_path / "study"
    proc = cpu_sweep(sweep_dir, *STUDY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_study(sweep_dir)
