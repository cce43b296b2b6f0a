"""Checkpoints: one reader giving one line for a missing, truncated, damaged or foreign file;
``last.ckpt`` keeps its predecessor ``last-1.ckpt``, and a resume falls back to it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_train
from omegaconf import OmegaConf

from dm2gal.train.build import build
from dm2gal.train.checkpoints import (
    PREVIOUS,
    CheckpointError,
    load_checkpoint,
    resume_point,
    rotate_in,
)
from dm2gal.train.pipeline import run
from dm2gal.train.runs import RUN_CONFIG, find_checkpoint, load_run

TWO_EPOCHS = ["trainer.max_epochs=2", "test=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A two-epoch smoke run with the default callbacks (EMA, best checkpoint, field stats)."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose_train(out, TWO_EPOCHS)
    run(cfg)
    (out / RUN_CONFIG).parent.mkdir()
    OmegaConf.save(cfg, out / RUN_CONFIG)  # what train.py's Hydra writes
    return out


def _cut(src: Path, dest: Path, keep: float) -> Path:
    """Copy the first ``keep`` fraction of ``src`` to ``dest`` (a copy cut short)."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def test_the_projects_checkpoints_load_without_unpickling_objects(run_dir: Path):
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in names and PREVIOUS in names and len(names) == 3
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        state = load_checkpoint(path)
        plain = torch.load(path, map_location="cpu", weights_only=False)
        assert state.keys() == plain.keys()
        for name, weight in plain["state_dict"].items():
            assert torch.equal(state["state_dict"][name], weight)


def test_last_keeps_its_predecessor(run_dir: Path):
    ckpt = run_dir / "checkpoints"
    last, previous = load_checkpoint(ckpt / "last.ckpt"), load_checkpoint(ckpt / PREVIOUS)
    # written at the end of epoch 2's validation (previous), then once more when fitting ended
    assert (previous["epoch"], last["epoch"]) == (1, 2)
    assert previous["global_step"] == last["global_step"] == 4
    assert find_checkpoint(run_dir).name.startswith("epoch")  # neither resume point is "best"


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_a_truncated_checkpoint_is_one_line_naming_file_and_size(run_dir, tmp_path, keep):
    cut = _cut(run_dir / "checkpoints" / "last.ckpt", tmp_path / "last.ckpt", keep)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(cut)
    message = str(raised.value)
    assert message.startswith(f"{cut}: checkpoint truncated or damaged")
    assert f"{cut.stat().st_size} bytes" in message
    assert f"{PREVIOUS} beside last.ckpt" in message and "\n" not in message


def test_a_flipped_byte_is_caught_by_the_zip_checksums(run_dir, tmp_path):
    data = bytearray((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights
    bad = tmp_path / "flipped.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        load_checkpoint(bad)


def test_missing_and_foreign_files(tmp_path: Path):
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'none.ckpt'}: checkpoint not found$"):
        load_checkpoint(tmp_path / "none.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"16 bytes; not the zip archive torch.save writes"):
        load_checkpoint(text)
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, weights)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_checkpoint(weights)


def test_objects_the_project_never_writes_need_trust(tmp_path: Path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1.0)}, foreign)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(foreign)
    assert "(argparse.Namespace)" in str(raised.value)
    assert "trust_checkpoint=true" in str(raised.value)
    assert load_checkpoint(foreign, trust=True)["args"].lr == 1.0


def test_load_run_reads_through_the_one_reader(run_dir: Path, tmp_path: Path):
    cfg, module, _, ckpt = load_run(run_dir, setup_data=False)
    state = load_checkpoint(ckpt)
    for name, weight in module.state_dict().items():
        assert torch.equal(weight, state["state_dict"][name])
    cut = _cut(ckpt, tmp_path / "cut.ckpt", 0.5)
    with pytest.raises(CheckpointError, match="truncated"):
        load_run(run_dir, cut, setup_data=False)


def test_rotate_in_keeps_one_predecessor(tmp_path: Path):
    last = tmp_path / "last.ckpt"
    for text in ("a", "b", "c"):
        new = tmp_path / ".last.ckpt.tmp"
        new.write_text(text)
        rotate_in(new, last)
    assert last.read_text() == "c"
    assert (tmp_path / PREVIOUS).read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS, "last.ckpt"]


def test_resume_point_falls_back_and_says_so(run_dir, tmp_path, caplog):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    assert resume_point(ckpt) is None
    with pytest.raises(CheckpointError, match="ckpt_path=last but there is neither"):
        resume_point(ckpt, required=True)
    shutil.copy(run_dir / "checkpoints" / PREVIOUS, ckpt / PREVIOUS)
    _cut(run_dir / "checkpoints" / "last.ckpt", ckpt / "last.ckpt", 0.5)
    with caplog.at_level(logging.WARNING):
        assert resume_point(ckpt) == ckpt / PREVIOUS
    assert f"resuming from the previous checkpoint {ckpt / PREVIOUS}" in caplog.text
    assert "last.ckpt: checkpoint truncated" in caplog.text
    # the damaged file is moved aside: the next rotation keeps the good predecessor
    assert "(moved aside to last.ckpt.damaged)" in caplog.text
    assert sorted(p.name for p in ckpt.iterdir()) == [PREVIOUS, "last.ckpt.damaged"]
    _cut(run_dir / "checkpoints" / "last.ckpt", ckpt / "last.ckpt", 0.5)
    _cut(run_dir / "checkpoints" / PREVIOUS, ckpt / PREVIOUS, 0.5)
    with pytest.raises(CheckpointError, match=r"last.ckpt: .* and .*last-1.ckpt: "):
        resume_point(ckpt)


def test_ckpt_path_last_resumes_from_the_predecessor_of_a_truncated_last(run_dir, tmp_path):
    shutil.copytree(run_dir / "checkpoints", tmp_path / "checkpoints")
    _cut(run_dir / "checkpoints" / "last.ckpt", tmp_path / "checkpoints" / "last.ckpt", 0.5)
    run(compose_train(tmp_path, ["trainer.max_epochs=3", "test=false", "ckpt_path=last"]))
    results = json.loads((tmp_path / "results.json").read_text())
    # the predecessor held epochs 1-2 (4 steps): the third epoch adds 2 steps
    assert results["status"] == "completed" and results["global_step"] == 6
    for name in ("last.ckpt", PREVIOUS):  # both whole again
        assert load_checkpoint(tmp_path / "checkpoints" / name)["global_step"] == 6


def test_an_explicit_truncated_ckpt_path_stops_with_one_line(run_dir, tmp_path):
    cut = _cut(run_dir / "checkpoints" / "last.ckpt", tmp_path / "cut.ckpt", 0.5)
    cfg = compose_train(tmp_path / "out", ["test=false", f"ckpt_path={cut}"])
    datamodule, module, trainer = build(cfg)
    with pytest.raises(CheckpointError, match=f"^{cut}: checkpoint truncated"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(cut))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate.py", "dm2gal.predict"])
def test_commands_print_one_line_for_a_truncated_checkpoint(run_dir, tmp_path, command):
    cut = _cut(run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "cut.ckpt", 0.5)
    # evaluate.py finds the run from ckpt_path; predict is given it
    where = [] if command == "evaluate.py" else [f"run_dir={run_dir}"]
    entry = [str(ROOT / command)] if command.endswith(".py") else ["-m", command]
    result = subprocess.run(
        [sys.executable, *entry, *where, f"ckpt_path={cut}", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    cut.unlink()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {cut}: checkpoint truncated")
