"""The CSV logger continues the metrics.csv of a resumed run."""

from __future__ import annotations

import csv
from pathlib import Path

from dm2gal.train.loggers import ResumableCSVLogger


def _log(save_dir: Path, steps: range, value: float) -> None:
    logger = ResumableCSVLogger(save_dir, name="csv", version="")
    for step in steps:
        logger.log_metrics({"train/loss": value + step}, step=step)
        logger.save()


def _rows(save_dir: Path) -> list[tuple[int, float]]:
    with open(save_dir / "csv" / "metrics.csv", newline="") as f:
        return [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(f)]


def test_a_resumed_run_keeps_the_rows_before_its_first_step(tmp_path: Path):
    _log(tmp_path, range(6), 10.0)  # killed after step 5; its checkpoint was at step 3
    _log(tmp_path, range(3, 5), 20.0)
    assert _rows(tmp_path) == [(0, 10.0), (1, 11.0), (2, 12.0), (3, 23.0), (4, 24.0)]


def test_a_fresh_run_in_the_same_directory_replaces_every_row(tmp_path: Path):
    _log(tmp_path, range(4), 10.0)
    _log(tmp_path, range(2), 30.0)
    assert _rows(tmp_path) == [(0, 30.0), (1, 31.0)]


def test_a_run_that_logs_nothing_leaves_the_file_alone(tmp_path: Path):
    _log(tmp_path, range(2), 10.0)
    ResumableCSVLogger(tmp_path, name="csv", version="").experiment  # noqa: B018
    assert _rows(tmp_path) == [(0, 10.0), (1, 11.0)]
