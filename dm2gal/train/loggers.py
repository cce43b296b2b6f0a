"""Experiment loggers. W&B runs offline unless an account is configured: never a prompt or a
network wait on a machine without one. The CSV logger continues the ``metrics.csv`` of a run
that resumes (Lightning's starts it afresh)."""

from __future__ import annotations

import csv
import netrc
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


def wandb_account_configured() -> bool:
    """Whether W&B credentials exist (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


WANDB_ID_FILE = "wandb_id.txt"


def find_wandb(loggers: Sequence[Any]) -> WandbLogger | None:
    """The first ``WandbLogger`` among ``loggers``, else None."""
    return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)


def persistent_run_id(save_dir: str | Path) -> str:
    """The W&B run id kept in ``<save_dir>/wandb_id.txt``, created on first use: a requeued or
    restarted job logs into the same W&B run."""
    path = Path(save_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(run_id)
    tmp.replace(path)
    return run_id


def wandb_logger(
    save_dir: str, offline: bool | None = None, persist_id: bool = False, **kwargs: Any
) -> WandbLogger:
    """A Lightning ``WandbLogger``; ``offline=None`` means offline unless an account is configured
    or ``WANDB_MODE`` says otherwise. ``persist_id``: resume the run whose id is stored in
    ``save_dir`` (:func:`persistent_run_id`) unless ``id`` is given."""
    mode = os.environ.get("WANDB_MODE")
    if offline is None:
        offline = mode in ("offline", "disabled") or (
            mode is None and not wandb_account_configured()
        )
    os.environ.setdefault("WANDB_SILENT", "true")
    os.makedirs(save_dir, exist_ok=True)
    if persist_id:
        kwargs.setdefault("id", persistent_run_id(save_dir))
        kwargs.setdefault("resume", "allow")
    return WandbLogger(save_dir=save_dir, offline=offline, **kwargs)


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is kept: its rows logged before the
    first step this process logs are written back in front of the new ones."""

    def _check_log_dir_exists(self) -> None:
        self.previous: list[dict[str, str]] | None = None
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.previous = list(csv.DictReader(f))

    def save(self) -> None:
        if self.previous is None or not self.metrics:
            super().save()
            return
        first = min(int(row["step"]) for row in self.metrics)
        kept = [row for row in self.previous if row.get("step") and int(row["step"]) < first]
        self.previous = None
        self.metrics = kept + self.metrics
        self._record_new_keys()
        tmp = f"{self.metrics_file_path}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(self.metrics)
        os.replace(tmp, self.metrics_file_path)
        self.metrics = []


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that continues an existing ``metrics.csv``: a run resumed from a
    checkpoint at global step ``s`` keeps the earlier rows with ``step < s`` (rows logged after
    that checkpoint, before a crash, are logged again by the resumed run and replaced). A run
    started afresh in the same directory logs from step 0 and so replaces every row."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
