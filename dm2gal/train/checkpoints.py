"""Checkpoints on disk: the one function that reads them, and the resume point's rotation.

:func:`load_checkpoint` is the only place the project reads a checkpoint (``load_run``, the
training pipeline's resume and test, Lightning itself through :class:`ProjectCheckpointIO`). It
never unpickles arbitrary objects: ``torch.load(weights_only=True)`` with only the types the
project's own Lightning checkpoints hold allowed: tensors and plain containers (dicts, lists,
numbers, strings: the module keeps its hyper-parameters plain, the optimiser and scheduler factories
stay out of the checkpoint), all of which torch allows by itself; a file holding anything else is
refused unless the user trusts it (``trust=True``, ``trust_checkpoint=true``). A missing,
truncated or foreign file gives one :class:`CheckpointError` line naming the file, its size and
what to do.

The resume point ``checkpoints/last.ckpt`` keeps its predecessor as ``last-1.ckpt``
(:func:`rotate_in`), so a resume (``ckpt_path=last`` or the automatic one) falls back to the
previous checkpoint when the newest is damaged (:func:`resume_point`).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dm2gal.errors import UserError
from dm2gal.io.store import reports_write_errors

log = logging.getLogger(__name__)

LAST = "last.ckpt"
PREVIOUS = "last-1.ckpt"
#: every file ``torch.save`` writes (the zip container) starts with these bytes
ZIP_SIGNATURE = b"PK\x03\x04"
TRUST_HINT = "trust_checkpoint=true"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, damaged, or not one the project wrote."""


def _size(path: Path) -> str:
    """The file's exact size (to compare with the original of a copy cut short)."""
    return f"{path.stat().st_size} bytes"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE


def _damage(path: Path) -> str | None:
    """Why the zip container of ``path`` is damaged (truncated, a flipped byte), else None; a
    file that is not a zip container is left to ``torch.load`` to judge."""
    if not _is_zip(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"truncated or damaged ({err})"
    return None if bad is None else f"damaged (member {bad} fails its CRC check)"


def load_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Read the checkpoint at ``path`` onto the CPU and return its dict.

    Only the types a dm2gal checkpoint holds are unpickled; ``trust=True`` (the user's explicit
    choice for a file from elsewhere) lifts that. Raises :class:`CheckpointError` with one line
    for a missing, truncated or damaged file, one that is no checkpoint, and (unless trusted) one
    holding other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    problem = _damage(path)
    if problem is not None:
        raise CheckpointError(
            f"{path}: checkpoint {problem}, {_size(path)}; copy it again, or use the checkpoint "
            f"written before it ({PREVIOUS} beside {LAST}; ckpt_path=last falls back to it)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:  # torch raises OSError, KeyError, UnpicklingError... for a bad file
        found = re.search(r"GLOBAL (\S+)", str(err))
        if not trust and isinstance(err, pickle.UnpicklingError) and found is not None:
            raise CheckpointError(
                f"{path}: holds objects dm2gal checkpoints never hold ({found.group(1)}); load "
                f"it only if you trust where it came from, with {TRUST_HINT}"
            ) from None
        reason = (
            str(err).splitlines()[0] if _is_zip(path) else "not the zip archive torch.save writes"
        )
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({_size(path)}; {reason})"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(
            f"{path}: a PyTorch file but not a Lightning checkpoint (no 'state_dict' entry)"
        )
    return state


class ProjectCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with every read going through :func:`load_checkpoint` (resume
    and ``trainer.test(ckpt_path=...)``), and a write that fails for space or permission
    reported as one :class:`~dm2gal.io.store.DiskError` line naming the checkpoint."""

    def __init__(self, trust: bool = False) -> None:
        self.trust = bool(trust)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, trust=self.trust)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with reports_write_errors(path):
            super().save_checkpoint(checkpoint, path, storage_options)


def rotate_in(new: Path, last: Path) -> None:
    """Make ``new`` (complete, beside ``last``) the resume point ``last``, keeping the current
    one as its predecessor (``last-1.ckpt`` for ``last.ckpt``). Both steps are renames, so every
    file is whole at every moment; between them only the predecessor exists, which
    :func:`resume_point` then takes."""
    if last.is_file():
        os.replace(last, previous_of(last))
    os.replace(new, last)


def previous_of(last: Path) -> Path:
    """The predecessor's name of a resume point: ``last.ckpt`` -> ``last-1.ckpt``."""
    return last.with_name(f"{last.stem}-1{last.suffix}")


def resume_point(ckpt_dir: str | Path, required: bool = False, trust: bool = False) -> Path | None:
    """The checkpoint to resume from in ``ckpt_dir``: ``last.ckpt``, or ``last-1.ckpt`` when the
    newest is missing or unreadable (a warning says so; a damaged ``last.ckpt`` is moved aside to
    ``last.ckpt.damaged``, so that the next rotation keeps the good predecessor). ``None`` when
    there is neither, unless ``required`` (``ckpt_path=last``), which raises; both damaged
    raises naming both."""
    last = Path(ckpt_dir) / LAST
    candidates = [p for p in (last, previous_of(last)) if p.is_file()]
    if not candidates:
        if required:
            raise CheckpointError(
                f"{last}: ckpt_path=last but there is neither {LAST} nor {PREVIOUS} in "
                f"{last.parent} (set hydra.run.dir to the run directory to resume)"
            )
        return None
    problems = [] if last.is_file() else [f"{last}: missing"]
    for path in candidates:
        try:
            load_checkpoint(path, trust=trust)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if path != last and last.is_file():
            damaged = last.with_name(f"{LAST}.damaged")
            os.replace(last, damaged)
            problems[0] += f" (moved aside to {damaged.name})"
        if problems:
            log.warning("%s; resuming from the previous checkpoint %s instead", problems[0], path)
        return path
    raise CheckpointError(" and ".join(problems))
