"""P(k) of two fields, their cross power and r(k) for grids larger than memory (slabs, pencils).

The same estimator as :func:`dm2gal.stats.torch_backend.cross_power` (overdensity
``field / mean - 1``, mass-assignment window deconvolved, modes binned by ``floor(|n|)`` with
Pylians' counting rule; k [h/Mpc], P [(Mpc/h)^3]), computed from fields that are read a few
x-planes at a time:

1. **Slabs.** For each slab of x-planes of both fields: subtract each plane's mean (its sum is
   kept, in float64, an N-vector per field), take the 2D real FFT over (y, z) in float64 and
   write both results, ``(x, y, field, k_z)``, into a spill file on disk (complex64 by default:
   ``N^2 (N/2 + 1) * 16`` bytes for the pair, 8.6 GB at 1024^3).
2. **Pencils.** For each block of y-rows: read ``spill[:, y0:y1]`` (every x), put the plane sums
   back on the ``k_y = k_z = 0`` line, take the 1D FFT along x in float64 and add each mode's
   ``|A|^2``, ``|B|^2`` and ``Re(A B*)`` (window-corrected) to float64 sums per k bin.

Subtracting each plane's mean before the 2D FFT keeps the large DC term out of the spill: the
``k_y = k_z = 0`` line is rebuilt from exact float64 plane sums, and the field means (the sum of
the plane sums) divide the binned powers at the end, so no pass is spent on the means. With a
complex64 spill each coefficient is rounded to ~6e-8 of itself, so a mode's power is resolved to
~1e-7 of the power of its (k_y, k_z) line, as with a float32 FFT (a 512^3 CIC dm field whose
P(k) spans 4e6: up to 6e-5 in the highest-k bins, 1e-7 elsewhere); ``spill_dtype=np.complex128``
(twice the disk) matches the in-memory float64 path to ~1e-12.

**Memory bound.** The anonymous memory is a few slabs and pencils: about 100-200 bytes per
voxel of ``max(chunk_voxels, N^2)`` (a slab is at least one x-plane; a pencil block at least one
y-row of ``N (N/2 + 1)`` modes) plus O(N) vectors, independent of N^3. With the default
``chunk_voxels = 2^22`` that is 0.4-0.8 GiB above the imports (measured by
``benchmarks/bench_scale.py``: 0.43, 0.76 and 0.66 GiB at 256^3, 512^3 and 1024^3) for any N up
to 2048.
Fields given as ``.npy`` paths (or store fields) are read with plain file reads and the spill
with ``pread``/``pwrite``: the data pass through the page cache, which the kernel reclaims, and
not through the process's resident set. The spill file is
created in ``work_dir`` and unlinked at once (its space is reserved first, so a full disk is an
error before any work, not a crash midway); it disappears when the computation ends, fails or
is killed.

Why not pmesh or mpi4py-fft: both distribute the grid over the memory of MPI ranks (the whole
grid is still in RAM, only spread over processes or nodes) and need an MPI library, mpi4py and
compiled FFTW/PFFT wrappers; this module needs one process, one disk and torch's FFTs.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dm2gal.errors import integer_option
from dm2gal.io.store import FieldStore, StoreError, slabs
from dm2gal.stats.base import CrossPower, check_box, check_mas
from dm2gal.stats.torch_backend import frequencies, mode_block, n_bins

#: default voxels per slab / modes per pencil block (see the module's memory bound)
CHUNK_VOXELS = 1 << 22
SPILL_DTYPES = (np.complex64, np.complex128)

Field = np.ndarray | str | Path


@dataclass(frozen=True)
class _Source:
    """One input field: its grid side, a name for messages and a reader of x-slabs."""

    n: int
    label: str
    read: Callable[[int, int], np.ndarray]  # (x0, x1) -> planes x0:x1, float32 (x1 - x0, N, N)


def _check_shape(shape: tuple[int, ...], dtype: np.dtype, label: str) -> int:
    """The side N of a float32 ``(N, N, N)`` field; raise naming ``label`` otherwise."""
    if np.dtype(dtype).kind != "f" or np.dtype(dtype).itemsize != 4:
        raise TypeError(f"{label}: expected a float32 field, got {np.dtype(dtype)}")
    if len(shape) != 3 or len(set(shape)) != 1 or shape[0] < 2:
        raise ValueError(f"{label}: expected a cubic (N, N, N) grid with N >= 2, got {shape}")
    return int(shape[0])


def _npy_source(path: Path) -> _Source:
    """A reader of x-slabs of a C-ordered float32 ``.npy`` file (either byte order)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError as err:
        raise StoreError(f"{path}: field file not found") from err
    except ValueError as err:
        raise StoreError(f"{path}: not a .npy file ({err})") from err
    n = _check_shape(shape, dtype, str(path))
    if fortran:
        raise ValueError(f"{path}: Fortran-ordered array; x-slabs need C order")
    plane = n * n

    def read(x0: int, x1: int) -> np.ndarray:
        count = (x1 - x0) * plane
        data = np.fromfile(path, dtype=dtype, count=count, offset=offset + x0 * plane * 4)
        if data.size != count:
            raise StoreError(f"{path}: truncated (planes {x0}:{x1} of {n} missing)")
        return data.reshape(x1 - x0, n, n)

    return _Source(n, str(path), read)


def _source(field: Field, name: str) -> _Source:
    """A reader of ``field``: a ``.npy`` path (plain file reads) or an array (slices)."""
    if isinstance(field, str | Path):
        return _npy_source(Path(field))
    if not hasattr(field, "shape") or not hasattr(field, "dtype"):
        raise TypeError(f"{name}: expected an array or a .npy path, got {type(field).__name__}")
    n = _check_shape(tuple(field.shape), field.dtype, name)
    return _Source(n, name, lambda x0, x1: np.asarray(field[x0:x1]))


@contextmanager
def _spill_file(work_dir: Path, size: int) -> Iterator[int]:
    """Yield the descriptor of a new file of ``size`` bytes in ``work_dir``, reserved on disk
    and already unlinked (so it vanishes when closed, whatever happens)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=work_dir, prefix=".spill.", suffix=".tmp")
    os.unlink(path)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise
            raise OSError(
                err.errno,
                f"{work_dir}: no room for the {size / 2**30:.2f} GiB spill file of the "
                f"out-of-core power spectrum ({err.strerror}); give a work_dir with more space",
            ) from err
        yield fd
    finally:
        os.close(fd)


def _pwrite(fd: int, array: np.ndarray, offset: int) -> None:
    """Write a C-contiguous array's bytes at ``offset``."""
    view = memoryview(array).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _pread(fd: int, array: np.ndarray, offset: int) -> None:
    """Fill a C-contiguous array with the bytes at ``offset``."""
    view = memoryview(array).cast("B")
    while view:
        got = os.preadv(fd, [view], offset)
        if got == 0:
            raise OSError(f"spill file ended early at byte {offset}")
        view, offset = view[got:], offset + got


def _slab_pass(
    sources: tuple[_Source, _Source], fd: int, dtype: np.dtype, chunk: int
) -> np.ndarray:
    """Pass 1: write the per-plane 2D FFTs of both fields; return the plane sums ``(2, N)``."""
    n = sources[0].n
    nz = n // 2 + 1
    sums = np.empty((2, n))
    row = n * 2 * nz * dtype.itemsize  # bytes of one x-plane of the spill
    for s in slabs(n, chunk):
        out = np.empty((s.stop - s.start, n, 2, nz), dtype)
        for i, src in enumerate(sources):
            planes = torch.from_numpy(src.read(s.start, s.stop).astype(np.float64))
            plane_sums = planes.sum(dim=(1, 2))
            if not torch.isfinite(plane_sums).all():
                raise ValueError(f"{src.label}: non-finite values in x-planes {s.start}:{s.stop}")
            planes -= (plane_sums / (n * n))[:, None, None]
            out[:, :, i, :] = torch.fft.rfft2(planes).numpy()
            sums[i, s] = plane_sums.numpy()
        _pwrite(fd, out, s.start * row)
    return sums


def _pencil_pass(
    fd: int, dtype: np.dtype, n: int, mas: str, sums: np.ndarray, chunk: int
) -> np.ndarray:
    """Pass 2: bin-summed ``counted``, ``counted |n|``, ``|A|^2``, ``|B|^2`` and ``Re(A B*)``
    (the last three window-corrected) over all modes, float64 ``(5, n_bins)``."""
    nz = n // 2 + 1
    ny_all = frequencies(n)
    totals = torch.zeros((5, n_bins(n)), dtype=torch.float64)
    row = n * 2 * nz * dtype.itemsize
    dy = max(1, chunk // (n * nz))  # y-rows per block of ~chunk modes

    def add(j: int, values: torch.Tensor) -> None:
        totals[j] += torch.bincount(index, weights=values.reshape(-1), minlength=totals.shape[1])

    for y0 in range(0, n, dy):
        ys = slice(y0, min(n, y0 + dy))
        block = np.empty((n, ys.stop - y0, 2, nz), dtype)
        for x in range(n):
            _pread(fd, block[x], x * row + y0 * 2 * nz * dtype.itemsize)
        modes = torch.from_numpy(block).to(torch.complex128)
        del block
        if y0 == 0:  # the plane sums are the k_y = k_z = 0 line before the x FFT
            modes[:, 0, :, 0] += torch.from_numpy(sums.T)
        modes = torch.fft.fft(modes, dim=0)
        index, kabs, counted, window2 = mode_block(n, mas, ny_all[ys])
        index = index.reshape(-1)
        weight2 = counted * window2
        a, b = modes[:, :, 0], modes[:, :, 1]
        add(0, counted)
        add(1, counted * kabs)
        add(2, (a.real**2 + a.imag**2) * weight2)
        add(3, (b.real**2 + b.imag**2) * weight2)
        add(4, (a.real * b.real + a.imag * b.imag) * weight2)
    return totals.numpy()


def cross_power(
    a: Field,
    b: Field,
    box: float,
    mas: str | None = "CIC",
    *,
    work_dir: str | Path | None = None,
    chunk_voxels: int = CHUNK_VOXELS,
    spill_dtype: type = np.complex64,
) -> CrossPower:
    """Auto and cross P(k) of two mass fields and r(k), out of core (see the module).

    Args:
        a, b: float32 ``(N, N, N)`` mass fields (Msun/h per voxel) of a periodic cube: arrays
            (memory maps are fine) or paths of ``.npy`` files (read slab by slab).
        box: the cube's side (Mpc/h).
        mas: the mass-assignment window to deconvolve (``"CIC"``, ``"None"``, ...).
        work_dir: where the spill file goes (default: the system's temporary directory).
        chunk_voxels: voxels per slab and modes per pencil block (~100-200 bytes each).
        spill_dtype: ``np.complex64`` (default) or ``np.complex128`` (double the disk, ~1e-12
            agreement with the in-memory float64 path).

    Returns :class:`dm2gal.stats.base.CrossPower`, as ``dm2gal.stats.torch_backend.cross_power``.
    """
    box, mas = check_box(box), check_mas(mas)
    chunk_voxels = integer_option(chunk_voxels, "chunk_voxels", 1)
    if spill_dtype not in SPILL_DTYPES:
        raise ValueError(f"spill_dtype: expected np.complex64 or np.complex128, got {spill_dtype}")
    sources = (_source(a, "a"), _source(b, "b"))
    n = sources[0].n
    if sources[1].n != n:
        raise ValueError(
            f"fields must share a grid: {sources[0].label} is {n}^3, "
            f"{sources[1].label} is {sources[1].n}^3"
        )
    dtype = np.dtype(spill_dtype)
    work_dir = Path(work_dir if work_dir is not None else tempfile.gettempdir())
    with _spill_file(work_dir, n * n * 2 * (n // 2 + 1) * dtype.itemsize) as fd:
        sums = _slab_pass(sources, fd, dtype, chunk_voxels)
        means = sums.sum(axis=1) / n**3
        for src, mean in zip(sources, means, strict=True):
            if not mean > 0:
                raise ValueError(
                    f"{src.label}: mean must be > 0 to form an overdensity, got {mean}"
                )
        totals = _pencil_pass(fd, dtype, n, mas, sums, chunk_voxels)
    nmodes = totals[0, 1:]
    scale = (box / n**2) ** 3 / nmodes
    pk_a = totals[2, 1:] * scale / means[0] ** 2
    pk_b = totals[3, 1:] * scale / means[1] ** 2
    pk_ab = totals[4, 1:] * scale / (means[0] * means[1])
    k = totals[1, 1:] / nmodes * (2.0 * math.pi / box)
    return CrossPower(k=k, pk_a=pk_a, pk_b=pk_b, pk_ab=pk_ab, r=pk_ab / np.sqrt(pk_a * pk_b),
                      nmodes=nmodes)  # fmt: skip


def store_cross_power(
    store_a: FieldStore,
    name_a: str,
    store_b: FieldStore,
    name_b: str,
    mas: str | None = "CIC",
    *,
    work_dir: str | Path | None = None,
    chunk_voxels: int = CHUNK_VOXELS,
    spill_dtype: type = np.complex64,
) -> CrossPower:
    """:func:`cross_power` of field ``name_a`` of ``store_a`` and ``name_b`` of ``store_b``
    (the same box and grid), read from their files; the spill goes to ``work_dir`` (default:
    ``store_a``'s directory)."""
    for store, name in ((store_a, name_a), (store_b, name_b)):
        store.read(name)  # raises naming the store and field if it is missing or malformed
    if (store_a.box, store_a.grid) != (store_b.box, store_b.grid):
        raise StoreError(
            f"{store_a.root} ({store_a.grid}^3, {store_a.box} Mpc/h) and {store_b.root} "
            f"({store_b.grid}^3, {store_b.box} Mpc/h) are not the same box and grid"
        )
    return cross_power(
        store_a.path(name_a),
        store_b.path(name_b),
        store_a.box,
        mas,
        work_dir=work_dir if work_dir is not None else store_a.root,
        chunk_voxels=chunk_voxels,
        spill_dtype=spill_dtype,
    )
