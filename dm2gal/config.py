"""OmegaConf resolvers used by the configs (registered on import) and config checks."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

RUN_ID_ENV = "DM2GAL_RUN_ID"

#: Keys a data config may define at its top level only to feed ``data.source`` by interpolation,
#: so that users can type ``data.root=...`` (see conf/data/tng100.yaml).
DATA_SHORTCUTS = ("root", "grid", "dark_root", "dm", "subhalo", "stellar", "box")


def run_id() -> str:
    """A short random id, fixed for this process and the processes it starts (via the env)."""
    if RUN_ID_ENV not in os.environ:
        os.environ[RUN_ID_ENV] = secrets.token_hex(3)
    return os.environ[RUN_ID_ENV]


def register_resolvers() -> None:
    """Register ``${run_id:}``; safe to call more than once."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_positive(cfg: DictConfig, *keys: str) -> None:
    """Raise ``ValueError`` naming the first of ``keys`` (dotted) that is not a positive number."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is not None and not (_is_number(value) and value > 0):
            raise ValueError(f"config key '{key}' must be a positive number, got {value!r}")


def require_non_negative(cfg: DictConfig, *keys: str) -> None:
    """Raise ``ValueError`` naming the first of ``keys`` (dotted) that is not a number >= 0."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is not None and not (_is_number(value) and value >= 0):
            raise ValueError(f"config key '{key}' must be a number >= 0, got {value!r}")


def require_count(cfg: DictConfig, *keys: str) -> None:
    """Raise ``ValueError`` naming the first of ``keys`` (dotted) that is not an integer >= 1."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is not None and not (_is_number(value) and int(value) == value >= 1):
            raise ValueError(f"config key '{key}' must be an integer >= 1, got {value!r}")


def data_module_config(data: DictConfig) -> DictConfig:
    """The ``data`` node, resolved, without its :data:`DATA_SHORTCUTS`: what the data module
    takes. A missing mandatory value (``???``) raises naming its key, e.g. ``data.root``."""
    resolved = OmegaConf.to_container(data, resolve=True, throw_on_missing=True)
    source = resolved.get("source") or {}
    for key in DATA_SHORTCUTS:
        if key in resolved and key in source and resolved[key] != source[key]:
            raise ValueError(
                f"config keys 'data.{key}' = {resolved[key]!r} and 'data.source.{key}' = "
                f"{source[key]!r} disagree: data.{key} feeds data.source.{key}, set only data.{key}"
            )
        resolved.pop(key, None)
    return OmegaConf.create(resolved)


def compose_train(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """``conf/train.yaml`` composed with command-line style ``overrides``, for code that runs
    outside ``train.py`` (``python -m dm2gal.fields``, ``python -m dm2gal.hod``, tests);
    ``hydra_node`` keeps the ``hydra`` node."""
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_node)


register_resolvers()
