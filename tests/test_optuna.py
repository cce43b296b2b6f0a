"""Optuna sweeps (``hparams_search=optuna``, ``optuna_twophase``) and the CPU SLURM launcher
(``hydra/launcher=slurm_cpu``): search spaces, the sbatch script, a real 4-trial study."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
import yaml
from conftest import ROOT, mock_cache_dir
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from optuna.distributions import CategoricalDistribution, LogUniformDistribution
from test_sweep import sweep_env

from dm2gal.sweep import aggregate
from dm2gal.train.build import compose_train
from dm2gal.train.runs import find_runs

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# a 4-trial study of seconds-long smoke trainings; crop 7 is a size the UNet rejects, and the
# depth is fixed (a fixed override leaves the search space): a 2-level UNet's context leaves the
# 64^3 smoke box no training crops
STUDY = [
    "hparams_search=optuna",
    "experiment=smoke",
    "logger=csv",
    "test=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.n_jobs=2",
    "data.crop=choice(8,7)",
    "model.levels=1",
]


def search_space(name: str) -> dict:
    """Optuna distributions of ``hparams_search=<name>``, parsed the way the sweeper does."""
    cfg = compose_train([f"hparams_search={name}"], hydra_node=True)
    assert cfg.hydra.sweeper._target_ == OPTUNA and cfg.hydra.sweeper.direction == "minimize"
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    distributions, fixed = create_params_from_overrides(params)
    assert fixed == {}
    return distributions


def test_optuna_search_spaces():
    space = search_space("optuna")
    assert space["optim.optimizer.lr"] == LogUniformDistribution(1e-4, 1e-2)
    assert space["optim.optimizer.weight_decay"] == LogUniformDistribution(1e-6, 1e-2)
    assert space["model.channels"] == CategoricalDistribution([8, 16, 32])
    assert "model.levels" not in space  # a 2-level UNet has no training crop on the 128^3 mock
    assert space["loss"] == CategoricalDistribution(["mse", "huber", "weighted_mse"])
    assert space["sampler.bins"] == CategoricalDistribution([10, 20, 50, 100])
    two = search_space("optuna_twophase")
    assert two["loss.bce_weight"] == LogUniformDistribution(0.1, 10.0)
    assert "loss" not in two
    cfg = compose_train(["hparams_search=optuna_twophase"])
    assert cfg.model._target_ == "dm2gal.models.TwoPhaseNet"
    assert cfg.loss._target_ == "dm2gal.train.losses.TwoPhaseLoss"


def sbatch_options(tmp_path: Path, launcher: str, monkeypatch) -> dict[str, str]:
    """``#SBATCH --key=value`` options submitit writes for ``hydra/launcher=<launcher>``, from its
    parameters as hydra-submitit-launcher does (``srun`` is not needed to write it)."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", lambda *args: 1)
    params = dict(compose_train([f"hydra/launcher={launcher}"], hydra_node=True).hydra.launcher)
    for key in ("_target_", "submitit_folder", "max_num_timeout", "setup"):
        params.pop(key)
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    base = {"name", "timeout_min", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node",
            "mem_gb", "stderr_to_stdout"}  # fmt: skip
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    text = executor._executor._make_submission_file_text("true", "0")
    lines = [line[len("#SBATCH --") :] for line in text.splitlines() if line.startswith("#SBATCH")]
    return dict(line.partition("=")[::2] for line in lines)


def test_slurm_cpu_asks_for_no_gpu(tmp_path: Path, monkeypatch):
    gpu = sbatch_options(tmp_path, "slurm", monkeypatch)
    assert gpu["gpus-per-node"] == "1" and gpu["mem"] == "64GB" and gpu["cpus-per-task"] == "8"
    cpu = sbatch_options(tmp_path, "slurm_cpu", monkeypatch)
    assert not [key for key in cpu if "gpu" in key or key in ("gres", "mem")], cpu
    assert cpu["ntasks-per-node"] == "1" and cpu["cpus-per-task"] == "4"
    assert cpu["signal"] == gpu["signal"] == "USR2@120"


def check_study(sweep_dir: Path) -> None:
    """Four trials; those with crop 7 failed, the others ok; the best is the lowest metric."""
    runs = find_runs(sweep_dir)
    assert [r.name for r in runs] == ["0", "1", "2", "3"]
    table = aggregate(sweep_dir)
    crops = table.column("data.crop")
    assert sorted(set(crops)) == ["7", "8"]  # the seeded sampler drew both
    assert table.column("status") == ["failed" if c == "7" else "ok" for c in crops]
    errors = table.column("error")
    assert all("data.crop" in e for e, c in zip(errors, crops, strict=True) if c == "7")
    assert all(r.get("model.channels") in ("8", "16", "32") for r in table.rows)
    assert table.column("model.levels") == ["1"] * 4
    metric = [
        v for v, c in zip(table.column("val/pk_ratio_abs_err"), crops, strict=True) if c == "8"
    ]
    study = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert study["best_params"]["data.crop"] == 8
    assert math.isclose(study["best_value"], min(metric), rel_tol=1e-6)
    assert f"Optuna best: {study['best_value']:.6g} at " in table.markdown.read_text()


@pytest.mark.slow
def test_four_trial_study_survives_a_failed_trial(tmp_path: Path):
    sweep_dir = tmp_path / "study"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *STUDY,
           f"hydra.sweep.dir={sweep_dir}", f"paths.data_dir={mock_cache_dir()}"]  # fmt: skip
    proc = subprocess.run(cmd, env=sweep_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Failed experiment" in proc.stdout + proc.stderr
    check_study(sweep_dir)


def test_sweep_table_ends_with_the_study(tmp_path: Path):
    from test_sweep import make_run

    make_run(tmp_path / "0", ["loss=mse"], results={"status": "completed", "metrics": {}})
    results = {"name": "optuna", "best_value": 0.25, "best_params": {"loss": "mse", "lr": 0.001}}
    (tmp_path / "optimization_results.yaml").write_text(yaml.safe_dump(results))
    table = aggregate(tmp_path)
    assert table.study == results
    assert table.markdown.read_text().endswith("\nOptuna best: 0.25 at loss=mse lr=0.001\n")
    (tmp_path / "optimization_results.yaml").unlink()
    assert "Optuna" not in aggregate(tmp_path).markdown.read_text()
