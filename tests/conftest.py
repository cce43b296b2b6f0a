"""Shared fixtures: composed Hydra configs shrunk to seconds on a CPU, with no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DM2GAL_ROOT", str(ROOT))
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("OMP_NUM_THREADS", "2")

# Overrides that make any train config a seconds-long CPU job on a tiny mock universe.
TINY = [
    "experiment=smoke",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
]


def compose_train(tmp_path: Path, overrides: list[str] = (), tiny: bool = True) -> DictConfig:
    """Compose ``conf/train.yaml`` (shrunk by ``TINY`` unless ``tiny`` is false) with outputs
    under ``tmp_path`` and the shared mock cache."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from dm2gal.train.build import compose_train as compose

    cfg = compose([*(TINY if tiny else []), *overrides], hydra_node=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.paths.data_dir = str(mock_cache_dir())
        del cfg.hydra
    return cfg


def run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``train.py`` / ``evaluate.py`` (or a module, ``dm2gal.predict``) as a user would (W&B
    offline); fail with its stderr."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "2"}
    command = [str(ROOT / script)] if script.endswith(".py") else ["-m", script]
    result = subprocess.run(
        [sys.executable, *command, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def mock_cache_dir() -> Path:
    """One cache of generated mocks for the whole test session (keyed by config hash inside)."""
    path = Path(os.environ.get("DM2GAL_TEST_DATA", "/tmp/dm2gal-test-data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def compose(tmp_path: Path):
    """``compose(overrides)``: the smoke training config plus ``overrides``, writing to tmp_path."""
    return lambda overrides=(), tiny=True: compose_train(tmp_path, list(overrides), tiny)
