"""The user errors of dm2gal: bad options, config keys, files or sources.

Library code raises them with one message that names the file, key or option and what was
expected; the commands print that message alone and exit with status 1 (:mod:`dm2gal.cli`).
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class UserError(Exception):
    """A problem with the user's input; the message says which input and what was expected."""


class ConfigError(UserError, ValueError):
    """A config key or option whose value cannot work."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist or is not what was expected."""


def integer_option(value: Any, key: str, minimum: int = 0) -> int:
    """``value`` as an ``int`` when it is an integer >= ``minimum`` (an integral float such as
    ``2.0`` from the command line too; never a bool or a string), else a :class:`ConfigError`
    naming ``key``: the one check of every integer option."""
    integral = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if not (integral and float(value).is_integer() and value >= minimum):
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return int(value)
