"""``trainer=ddp`` with two CPU processes (gloo), launched the way SLURM or torchrun do it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

# One rank: compose the smoke config into the shared output dir, train, record what this rank saw.
DRIVER = """
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from conftest import compose_train
from dm2gal.train.pipeline import train

cfg = compose_train(Path({out!r}), {overrides!r})
metrics = train(cfg)
world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
Path({out!r}, "rank" + sys.argv[1] + ".json").write_text(json.dumps(dict(metrics, world=world)))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree(tmp_path: Path):
    """Both ranks train 3 steps on different draws (samplers seeded by rank); DDP keeps the
    weights equal and ``sync_dist`` averages the validation loss (BatchNorm statistics are
    per rank), so both report the same ``val/loss``."""
    overrides = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.benchmark=false",
        "trainer.sync_batchnorm=false",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "test=false",
    ]
    script = DRIVER.format(tests=str(ROOT / "tests"), out=str(tmp_path), overrides=overrides)
    env = {k: v for k, v in os.environ.items() if k != "DM2GAL_RUN_ID"}
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        WORLD_SIZE="2",
        NODE_RANK="0",
        OMP_NUM_THREADS="1",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(rank)],
            cwd=ROOT,
            env={**env, "LOCAL_RANK": str(rank), "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["val/loss"] > 0
    assert rank0["val/loss"] == pytest.approx(rank1["val/loss"], rel=1e-6)
    # the per-step training loss is not synced: the ranks trained on different crops
    assert rank0["train/loss_step"] != rank1["train/loss_step"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["global_step"] == 3
