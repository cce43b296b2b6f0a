"""OmegaConf resolvers used by the configs (registered on import) and config checks."""

from __future__ import annotations

import os
import secrets

from omegaconf import DictConfig, OmegaConf

RUN_ID_ENV = "DM2GAL_RUN_ID"


def run_id() -> str:
    """A short random id, fixed for this process and the processes it starts (via the env)."""
    if RUN_ID_ENV not in os.environ:
        os.environ[RUN_ID_ENV] = secrets.token_hex(3)
    return os.environ[RUN_ID_ENV]


def register_resolvers() -> None:
    """Register ``${run_id:}``; safe to call more than once."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def require_positive(cfg: DictConfig, *keys: str) -> None:
    """Raise ``ValueError`` naming the first of ``keys`` (dotted) that is not a positive number."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is not None and not (isinstance(value, int | float) and value > 0):
            raise ValueError(f"config key '{key}' must be a positive number, got {value!r}")


register_resolvers()
