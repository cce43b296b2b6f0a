"""The smoke-sized hypercube end to end, as a user runs it: a FiLM network trained across the
universes of data=mock_lh and evaluated, scored on the unseen universes, and predicting a
universe from its store's parameters (refusing one outside the training ranges)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import mock_cache_dir, run_script

from dm2gal.io.store import FieldStore

# every universe, the unseen ones included, on IC seed 42, whose 9 Mpc/h smoke test cube holds
# galaxies (other seeds can leave it empty)
SMOKE = [
    "experiment=smoke",
    "data=mock_lh",
    "model.conditioning=film",
    "data.source.same_seed=true",
    "data.source.ic_seed=42",
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python train.py experiment=smoke data=mock_lh model.conditioning=film``: fit, test and
    the held-out evaluation of the first universe."""
    tmp = tmp_path_factory.mktemp("hypercube_smoke")
    run = tmp / "run"
    run_script(
        "train.py",
        *SMOKE,
        "logger=csv",
        f"paths.data_dir={mock_cache_dir()}",
        f"hydra.run.dir={run}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        cwd=tmp,
    )
    return run


@pytest.mark.slow
def test_smoke_hypercube_trains_and_evaluates(smoke_run: Path) -> None:
    metrics = json.loads((smoke_run / "evaluation" / "metrics.json").read_text())
    assert "model" in metrics["models"] and "oracle_mean" in metrics["models"]
    state = torch.load(smoke_run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    low, high = state["net.film.low"].tolist(), state["net.film.high"].tolist()
    assert len(low) == 6 and all(a < b for a, b in zip(low, high, strict=True))
    assert 0.25 <= low[0] < high[0] <= 0.35  # Om0's range of the hypercube


@pytest.mark.slow
def test_smoke_hypercube_unseen_universes_and_predict(smoke_run: Path, tmp_path: Path) -> None:
    """The unseen universes scored (their parameters inside the training ranges), then one of
    them predicted from its recorded parameters, and refused with Om0 outside the range."""
    out = tmp_path / "hypercube"
    run_script(
        "dm2gal.hypercube", f"run_dir={smoke_run}", f"out={out}", "hod=binned", "response=false"
    )
    result = json.loads((out / "hypercube.json").read_text())
    rows = result["universes"]
    assert len(rows) == 4 and result["summary"]["universes"] == 4
    state = torch.load(smoke_run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    low, high = state["net.film.low"].tolist(), state["net.film.high"].tolist()
    for row in rows:
        for (name, value), a, b in zip(row["parameters"].items(), low, high, strict=True):
            assert a <= value <= b, name
        assert 0 < row["scores"]["oracle_mean"]["rk_mean_large"] <= 1
    assert (out / "scores_by_parameter.png").is_file() and (out / "hypercube.md").is_file()

    store, predicted = rows[0]["store"], tmp_path / "predicted"
    run_script("dm2gal.predict", f"run_dir={smoke_run}", f"store={store}", f"out={predicted}",
               "tile=16")  # fmt: skip
    assert FieldStore(predicted).read("stellar").sum() > 0
    env = {**os.environ, "WANDB_MODE": "offline"}
    refused = subprocess.run(
        [sys.executable, "-m", "dm2gal.predict", f"run_dir={smoke_run}", f"store={store}",
         f"out={tmp_path / 'refused'}", "params.Om0=0.9"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "error: params.Om0 = 0.9 is outside the training range" in refused.stderr
    assert not (tmp_path / "refused").exists()
