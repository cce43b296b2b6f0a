"""Experiment loggers. W&B runs offline unless an account is configured: never a prompt or a
network wait on a machine without one."""

from __future__ import annotations

import netrc
import os
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


def wandb_logger(save_dir: str, offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """A Lightning ``WandbLogger``; ``offline=None`` means offline unless an account is configured
    or ``WANDB_MODE`` says otherwise."""
    mode = os.environ.get("WANDB_MODE")
    if offline is None:
        offline = mode in ("offline", "disabled") or (
            mode is None and not wandb_account_configured()
        )
    os.environ.setdefault("WANDB_SILENT", "true")
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(save_dir=save_dir, offline=offline, **kwargs)
