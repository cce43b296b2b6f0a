"""Experiment loggers. W&B runs offline unless an account is configured: never a prompt or a
network wait on a machine without one."""

from __future__ import annotations

import netrc
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


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
