"""Config -> objects: OmegaConf resolvers (registered on import), composition, checks, and the
data module, Lightning module and trainer built from a composed config."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dm2gal.errors import ConfigError, integer_option
from dm2gal.train.callbacks import PreemptionCheckpoint
from dm2gal.train.checkpoints import ProjectCheckpointIO
from dm2gal.train.module import PlateauStep, UniverseParameters

RUN_ID_ENV = "DM2GAL_RUN_ID"

#: Keys a data config may define at its top level only to feed ``data.source`` by interpolation,
#: so that users can type ``data.root=...`` (see conf/data/tng100.yaml), and the names of the
#: parameters of a multi-universe source, which feed ``model.parameters`` (conf/data/mock_lh.yaml).
DATA_SHORTCUTS = ("root", "grid", "dark_root", "dm", "subhalo", "stellar", "box", "parameter_names")


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
    """Raise :class:`ConfigError` naming the first of ``keys`` (dotted) that is not a positive
    number."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is not None and not (_is_number(value) and value > 0):
            raise ConfigError(f"config key '{key}' must be a positive number, got {value!r}")


def require_non_negative(cfg: DictConfig, *keys: str) -> None:
    """Raise :class:`ConfigError` naming the first of ``keys`` (dotted) that is not a number
    >= 0."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is not None and not (_is_number(value) and value >= 0):
            raise ConfigError(f"config key '{key}' must be a number >= 0, got {value!r}")


def require_integer(cfg: DictConfig, minimum: int, *keys: str) -> None:
    """Raise :class:`ConfigError` naming the first of ``keys`` (dotted) that is set and not an
    integer >= ``minimum``."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            integer_option(value, key, minimum)


def data_module_config(data: DictConfig) -> DictConfig:
    """The ``data`` node, resolved, without its :data:`DATA_SHORTCUTS`: what the data module
    takes. A missing mandatory value (``???``) raises naming its key, e.g. ``data.root``."""
    resolved = OmegaConf.to_container(data, resolve=True, throw_on_missing=True)
    source = resolved.get("source") or {}
    for key in DATA_SHORTCUTS:
        if key in resolved and key in source and resolved[key] != source[key]:
            raise ConfigError(
                f"config keys 'data.{key}' = {resolved[key]!r} and 'data.source.{key}' = "
                f"{source[key]!r} disagree: data.{key} feeds data.source.{key}, set only data.{key}"
            )
        resolved.pop(key, None)
    return OmegaConf.create(resolved)


def compose_train(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """``conf/train.yaml`` composed with command-line style ``overrides``, for code that runs
    outside ``train.py`` (``python -m dm2gal.fields``, ``python -m dm2gal.hod``, tests);
    ``hydra_node`` keeps the ``hydra`` node."""
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_node)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a group such as ``callbacks`` or ``logger``."""
    if not cfg:
        return []
    return [
        instantiate(node)
        for node in cfg.values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def check_config(cfg: DictConfig) -> None:
    """Raise one clear error naming the key for values that cannot work."""
    require_positive(
        cfg,
        "data.crop",
        "data.batch_size",
        "data.box",
        "data.source.box",
        "data.source.grid",
        "data.source.particles",
        "trainer.max_epochs",
        "evaluation.tile",
        "optim.optimizer.lr",
    )
    require_non_negative(cfg, "optim.optimizer.weight_decay")
    require_integer(cfg, 1, "sampler.bins", "sampler.samples_per_epoch")
    require_integer(cfg, 0, "evaluation.calibration_voxels")


def build_components(cfg: DictConfig) -> tuple[Any, L.LightningModule]:
    """Build the data module (with the network's context) and the Lightning module."""
    check_config(cfg)
    net = instantiate(cfg.model)
    if not net.valid_output(cfg.data.crop):
        raise ConfigError(
            f"config key 'data.crop' = {cfg.data.crop} is not an output size that "
            f"model {type(net).__name__} accepts (fixed output: {net.fixed_output})"
        )
    sampler = instantiate(cfg.sampler) if cfg.get("sampler") else None
    datamodule = instantiate(data_module_config(cfg.data), context=net.context, sampler=sampler)
    grid_key = "data.grid" if OmegaConf.select(cfg, "data.grid") is not None else "data.source.grid"
    grid = OmegaConf.select(cfg, grid_key)
    if grid is not None:  # before any data is generated or read
        datamodule.check_room(grid, f"the grid ('{grid_key}' = {grid})")
    return datamodule, instantiate(cfg.module, net=net, loss=instantiate(cfg.loss))


def build(cfg: DictConfig) -> tuple[Any, L.LightningModule, L.Trainer]:
    """Build the data module, the Lightning module and the trainer from a composed config; the
    trainer reads checkpoints through :func:`dm2gal.train.checkpoints.load_checkpoint`."""
    datamodule, module = build_components(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    # the plateau scheduler steps before last.ckpt is written (the checkpoint callbacks go last)
    callbacks = [
        UniverseParameters(),  # first: sets a conditioned network's ranges before any copy
        PlateauStep(),
        instantiate(cfg.nonfinite),
        *instantiate_group(cfg.get("callbacks")),
    ]
    trainer = instantiate(
        cfg.trainer,
        callbacks=[*callbacks, PreemptionCheckpoint(checkpoints)],
        logger=instantiate_group(cfg.get("logger")) or False,
        plugins=[ProjectCheckpointIO(trust=cfg.trust_checkpoint)],
    )
    return datamodule, module, trainer


register_resolvers()
