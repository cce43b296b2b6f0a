"""The user errors of dm2gal: bad options, config keys, files or sources.

Library code raises them with one message that names the file, key or option and what was
expected; the commands print that message alone and exit with status 1 (:mod:`dm2gal.cli`).
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message says which input and what was expected."""


class ConfigError(UserError, ValueError):
    """A config key or option whose value cannot work."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist or is not what was expected."""
