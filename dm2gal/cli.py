"""What every command (``train.py``, ``evaluate.py``, ``python -m dm2gal.<command>``) does with
errors: a user error prints one line on stderr and exits with status 1; a bug keeps its
traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too. In a multirun
(:func:`multirun`, also read by the training pipeline) the error is raised instead. Imports
nothing of dm2gal but :mod:`dm2gal.errors`, so every layer may use it."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from dm2gal.errors import UserError

T = TypeVar("T")


def user_error(err: BaseException) -> BaseException | None:
    """The :class:`UserError` (or missing mandatory config value) that ``err`` is or was raised
    from (e.g. inside Hydra's ``instantiate``), else ``None``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError | MissingMandatoryValue):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def command_name() -> str:
    """``python -m dm2gal.<command>`` of the running process (from its ``sys.argv[0]``, e.g.
    ``.../dm2gal/hod/__main__.py``), what ``--help`` names: Hydra would say ``__main__``."""
    parts = Path(sys.argv[0]).with_suffix("").parts
    if "dm2gal" not in parts:
        return Path(sys.argv[0]).name
    names = parts[len(parts) - 1 - parts[::-1].index("dm2gal") :]
    return "python -m " + ".".join(n for n in names if n != "__main__")


if not OmegaConf.has_resolver("dm2gal_command"):
    OmegaConf.register_new_resolver("dm2gal_command", command_name)


def multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``); ``False`` outside Hydra."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def reports_user_errors(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Wrap a Hydra task function (under ``@hydra.main``): a user error prints
    ``error: <message>`` on stderr and exits with status 1. In a multirun the error is raised
    (the launcher records the failed job and runs the others), as it is with
    ``HYDRA_FULL_ERROR=1``."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except Exception as err:
            found = user_error(err)
            if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1" or multirun():
                raise
            message = str(found)
            if isinstance(found, MissingMandatoryValue):
                message = message.splitlines()[0]
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper
