"""Field store: one float32 ``.npy`` array per field in a directory, plus ``meta.json``.

Fields are mass per voxel (Msun/h) on an ``N^3`` grid of a periodic box of side ``L`` (Mpc/h).
Every array is written to a temporary name and renamed when complete; ``meta.json`` (also
written atomically) lists each complete field with its content hash, so a crash never leaves
a half-written field that looks whole. Fields are opened memory-mapped: reading a crop never
loads the whole grid.

Writes report a full disk, a read-only file system or a missing permission as one
:class:`DiskError` line naming the path (:func:`reports_write_errors`, used by
:func:`atomic_path` and :func:`staged_dir`), and large artefacts check the free space before
they start (:func:`require_free_space`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dm2gal import __version__
from dm2gal.errors import ConfigError, UserError

META_NAME = "meta.json"


class StoreError(UserError, RuntimeError):
    """A field store is missing, incomplete or inconsistent."""


class DiskError(UserError, OSError):
    """A file or directory cannot be written: no space left, a read-only file system, no
    permission (the message names the path; the bytes needed and free when known)."""


#: errors of a write that found no room: the disk or the quota is full, or the file too large
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: errors of a write to a place that may not be written
ACCESS_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: bytes of a stored field's ``.npy`` header (numpy's format pads it to 128 bytes for 3 axes)
NPY_HEADER_BYTES = 128


def _bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (``1.5 GiB``)."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def free_bytes(path: str | Path) -> int:
    """Bytes free for this user on the file system that holds ``path`` (or would: its nearest
    existing parent)."""
    place = Path(path).absolute()
    while not place.exists():
        place = place.parent
    return shutil.disk_usage(place).free


def field_bytes(grid: int, count: int = 1) -> int:
    """Bytes that ``count`` stored float32 ``grid^3`` fields take on disk."""
    return count * (4 * int(grid) ** 3 + NPY_HEADER_BYTES)


def require_free_space(path: str | Path, nbytes: int, what: str) -> None:
    """Raise :class:`DiskError` naming ``path`` when the disk that will hold it has less than
    ``nbytes`` free; ``what`` says what needs them (``"3 fields of 512^3"``)."""
    free = free_bytes(path)
    if free < nbytes:
        raise DiskError(
            f"{path}: {what} needs {_bytes(nbytes)}, only {_bytes(free)} free on its disk; "
            "free some space or write it elsewhere"
        )


def _related(filename: str | bytes | None, place: Path) -> bool:
    """Whether an error's ``filename`` is ``place``, inside it or one of its parents (the write
    under ``place`` failed there), or unknown."""
    if filename is None:
        return True
    path = Path(os.fsdecode(filename)).absolute()
    return path.is_relative_to(place) or place.is_relative_to(path)


def _write_problem(err: OSError, place: Path) -> str | None:
    """What stopped a write under ``place`` (a sentence with what to do), or None when ``err``
    is not about writing there (e.g. an input file that cannot be read)."""
    space = err.errno in SPACE_ERRNOS or (
        # numpy (ndarray.tofile, np.save) and h5py report short writes without an errno
        err.errno is None and ("requested and" in str(err) or "No space left" in str(err))
    )
    if space:
        return (
            f"no space left on its disk ({_bytes(free_bytes(place))} free); free some space "
            "or write it elsewhere"
        )
    if err.errno in ACCESS_ERRNOS and _related(err.filename, place):
        # a parent that could not be made is worth naming; the file itself (or its temporary
        # name) is not
        parent = err.filename is not None and place.is_relative_to(os.fsdecode(err.filename))
        where = f" ({os.fsdecode(err.filename)})" if parent else ""
        return f"{err.strerror.lower()}{where}; choose a directory you may write to"
    return None


@contextmanager
def reports_write_errors(path: str | Path, within: str | Path | None = None) -> Iterator[None]:
    """Turn an ``OSError`` of writing ``path`` (no space, read-only file system, no permission)
    raised in the block into one :class:`DiskError` line naming ``path``; other errors (reading
    an input elsewhere) pass. ``within``: the directory written to (default: ``path``'s)."""
    path = Path(path)
    try:
        yield
    except UserError:
        raise
    except OSError as err:
        problem = _write_problem(err, Path(within or path.parent).absolute())
        if problem is None:
            raise
        raise DiskError(f"{path}: cannot write it: {problem}") from err


def file_hash(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """Return the BLAKE2b (128-bit) hex digest of a file, read in chunks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def config_hash(config: Any) -> str:
    """Return a short stable hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def slabs(grid: int, chunk_voxels: int = 1 << 24) -> Iterator[slice]:
    """Slices along the first axis of a ``grid^3`` field, each of about ``chunk_voxels`` voxels
    (at least one plane): how fields larger than memory are read and written in pieces."""
    step = max(1, chunk_voxels // (grid * grid))
    for x0 in range(0, grid, step):
        yield slice(x0, min(grid, x0 + step))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success. A full
    disk, a read-only file system or a missing permission is one :class:`DiskError` line."""
    path = Path(path)
    with reports_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def reserve(path: Path) -> None:
    """Allocate the disk blocks of the file ``path`` up to its size (``posix_fallocate``), so a
    memory map of it cannot hit a full disk later: there that is a SIGBUS crash, not an error.
    A file system (or platform) without it keeps the sparse file."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def _owner_alive(owner: Path) -> bool:
    """Whether the process named in ``owner`` (``pid host``) may still be running: True unless
    it ran on this host and no process of that id exists (unreadable files count as alive)."""
    try:
        pid, host = owner.read_text().split()
        pid = int(pid)
    except (OSError, ValueError):
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def remove_stale_staging(target: str | Path) -> list[Path]:
    """Remove the staging directories of ``target`` (``.<name>.*.tmp`` and ``.old``, see
    :func:`staged_dir`) whose owner process, recorded beside them in ``.<name>.*.owner``, is
    gone from this host: what a killed build left. Ones of live processes, of other hosts or
    without an owner file stay. Returns the removed paths."""
    target = Path(target)
    prefix = f".{target.name}."
    removed = []
    if not target.parent.is_dir():
        return removed
    for owner in target.parent.iterdir():
        if not (owner.name.startswith(prefix) and owner.name.endswith(".owner")):
            continue
        if _owner_alive(owner):
            continue
        for suffix in (".tmp", ".old"):
            stale = owner.with_suffix(suffix)
            if stale.exists():
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
        owner.unlink(missing_ok=True)
    return removed


@contextmanager
def staged_dir(
    target: str | Path, keep: Callable[[Path], bool] | None = None, nbytes: int = 0
) -> Iterator[Path]:
    """Yield a new staging directory beside ``target``; when the block succeeds it replaces
    ``target`` by renames (an existing ``target`` is moved aside first, then removed), so a
    crash never leaves a half-written directory under the target's name. ``keep(target)``, when
    given, is asked just before: True keeps a ``target`` that another process completed
    meanwhile and drops the staging directory. ``nbytes``, the size of what the block writes,
    must be free on the disk first; a write that fails for space or permission is one
    :class:`DiskError` line naming ``target``.

    The staging directory ``.<name>.<random>.tmp`` has an owner file ``.<name>.<random>.owner``
    beside it (this process's id and host), so the next build of ``target`` removes what a
    killed one left (:func:`remove_stale_staging`) and never what a running one is writing."""
    target = Path(target)
    with reports_write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        require_free_space(target, nbytes, "writing it")
        remove_stale_staging(target)
        staging = Path(
            tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        )
        owner = staging.with_suffix(".owner")
        owner.write_text(f"{os.getpid()} {socket.gethostname()}\n")
    try:
        with reports_write_errors(staging, within=staging):
            yield staging
        if keep is not None and target.exists() and keep(target):
            return
        if target.exists():
            old = staging.with_suffix(".old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except DiskError as err:
        # name the target, not the hidden staging directory that is about to go
        raise DiskError(str(err).replace(str(staging), str(target))) from err.__cause__
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        owner.unlink(missing_ok=True)


class FieldStore:
    """A directory of fields on one grid of one periodic box.

    Args:
        root: the store directory (created on first write).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- metadata -----------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / META_NAME

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def meta(self) -> dict[str, Any]:
        """Return the store metadata (``box`` in Mpc/h, ``grid``, ``fields``, ``attrs``)."""
        if not self.meta_path.is_file():
            raise StoreError(f"{self.meta_path}: no field store here (missing {META_NAME})")
        try:
            meta = json.loads(self.meta_path.read_text())
        except json.JSONDecodeError as err:
            raise StoreError(f"{self.meta_path}: not valid JSON ({err})") from err
        for key in ("box", "grid", "fields"):
            if key not in meta:
                raise StoreError(f"{self.meta_path}: missing key '{key}'")
        return meta

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.meta_path, json.dumps(meta, indent=2, sort_keys=True, default=str))

    def init(self, box: float, grid: int, **attrs: Any) -> None:
        """Create (or reset) the store's metadata for a box of side ``box`` Mpc/h on ``grid``^3."""
        if not box > 0:
            raise ValueError(f"box size must be > 0 Mpc/h, got {box}")
        if int(grid) != grid or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid}")
        attrs.setdefault("code_version", __version__)
        self._write_meta({"box": float(box), "grid": int(grid), "fields": {}, "attrs": attrs})

    def update_attrs(self, **attrs: Any) -> None:
        """Add ``attrs`` to the store's attributes (replacing those of the same name)."""
        meta = self.meta()
        meta.setdefault("attrs", {}).update(attrs)
        self._write_meta(meta)

    @property
    def box(self) -> float:
        return float(self.meta()["box"])

    @property
    def grid(self) -> int:
        return int(self.meta()["grid"])

    def fields(self) -> list[str]:
        return sorted(self.meta()["fields"])

    def check_voxel_size(self, voxel: float, whose: str) -> None:
        """A ConfigError naming this store unless its voxels are ``voxel`` Mpc/h, the voxel size
        that ``whose`` names (e.g. "the network was trained on")."""
        own = self.box / self.grid
        if not math.isclose(own, voxel, rel_tol=1e-6):
            raise ConfigError(
                f"{self.root}: voxels of {own:.6g} Mpc/h ({self.grid}^3 in {self.box} Mpc/h); "
                f"{whose} voxels of {voxel:.6g} Mpc/h"
            )

    def field_meta(self, name: str) -> dict[str, Any]:
        fields = self.meta()["fields"]
        if name not in fields:
            raise StoreError(f"{self.root}: no field '{name}' (has: {sorted(fields)})")
        return fields[name]

    def path(self, name: str) -> Path:
        return self.root / f"{name}.npy"

    # -- fields -------------------------------------------------------------------------------
    def write(self, name: str, array: np.ndarray, **attrs: Any) -> None:
        """Write field ``name`` (float32, shape ``grid^3``) atomically and record it in meta."""
        meta = self.meta()
        grid = meta["grid"]
        array = np.asarray(array)
        if array.shape != (grid,) * 3:
            raise StoreError(
                f"{self.root}: field '{name}' has shape {array.shape}, expected {(grid,) * 3}"
            )
        if not np.isfinite(array).all():
            raise StoreError(f"{self.root}: field '{name}' has non-finite values")
        require_free_space(self.path(name), field_bytes(grid), f"field '{name}' ({grid}^3)")
        with atomic_path(self.path(name)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array, dtype=np.float32))
            digest = file_hash(tmp)
        self._record(name, digest, attrs)

    @contextmanager
    def create(self, name: str, **attrs: Any) -> Iterator[np.memmap]:
        """Yield a zeroed, writable memory-mapped float32 ``grid^3`` array for field ``name``.

        The field appears in the store only if the block exits without an exception; use it to
        paint fields larger than memory chunk by chunk. Its disk space is checked and reserved
        first (:func:`reserve`): writing through the map cannot run out of space later.
        """
        grid = self.meta()["grid"]
        require_free_space(self.path(name), field_bytes(grid), f"field '{name}' ({grid}^3)")
        with atomic_path(self.path(name)) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(grid,) * 3)
            reserve(tmp)
            yield array
            array.flush()
            del array
            digest = file_hash(tmp)
        self._record(name, digest, attrs)

    def _record(self, name: str, digest: str, attrs: dict[str, Any]) -> None:
        meta = self.meta()
        meta["fields"][name] = {"hash": digest, **attrs}
        self._write_meta(meta)

    def read(self, name: str, mmap: bool = True) -> np.ndarray:
        """Return field ``name``: memory-mapped read-only by default."""
        self.field_meta(name)
        path = self.path(name)
        if not path.is_file():
            raise StoreError(f"{path}: listed in {self.meta_path} but missing on disk")
        array = np.load(path, mmap_mode="r" if mmap else None)
        grid = self.grid
        if array.shape != (grid,) * 3:
            raise StoreError(f"{path}: shape {array.shape}, expected {(grid,) * 3}")
        return array

    def verify(self, names: list[str] | None = None) -> list[str]:
        """Return the names of fields whose file is missing or whose hash does not match."""
        bad = []
        fields = self.meta()["fields"]
        for name in names if names is not None else sorted(fields):
            path = self.path(name)
            if name not in fields or not path.is_file() or file_hash(path) != fields[name]["hash"]:
                bad.append(name)
        return bad
