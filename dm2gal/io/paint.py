"""Particles and catalogues -> CIC mass grids (Pylians ``MAS_library``), whole or streamed.

Positions are comoving Mpc/h, masses Msun/h; the output is mass per voxel (float32) on an
``N^3`` grid of a periodic box of side ``L``. Pylians is the reference painter; this module
validates inputs first because ``MAS_library.MA`` calls ``sys.exit`` on bad arguments.
:func:`paint_field` paints chunk by chunk into one in-memory grid and writes it to the store
once, so peak memory is one field plus one chunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dm2gal.io.store import FieldStore

#: the mass-assignment schemes Pylians paints with (the window corrections are in dm2gal.stats)
PAINT_SCHEMES = ("NGP", "CIC", "TSC", "PCS")


def paint(
    pos: np.ndarray,
    mass: np.ndarray | float,
    grid: int,
    box: float,
    mas: str = "CIC",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Add particle masses to a periodic ``grid^3`` mesh with Pylians; return the mesh.

    Args:
        pos: ``(n, 3)`` positions in Mpc/h (wrapped into ``[0, box)`` here).
        mass: ``(n,)`` masses in Msun/h, or one mass for every particle.
        grid: mesh side ``N``.
        box: box side ``L`` in Mpc/h.
        mas: mass-assignment scheme, one of ``PAINT_SCHEMES``.
        out: float32 ``grid^3`` mesh to add into (a new zero mesh when ``None``).
    """
    import MAS_library as masl  # lazy: GPU machines run without Pylians

    if mas not in PAINT_SCHEMES:
        raise ValueError(f"mas must be one of {PAINT_SCHEMES}, got {mas!r}")
    if not box > 0:
        raise ValueError(f"box size must be > 0 Mpc/h, got {box}")
    if int(grid) != grid or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid}")
    pos = np.asarray(pos)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (n, 3), got {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError("positions contain non-finite values")
    n = len(pos)
    if np.ndim(mass) == 0:
        weights = np.full(n, mass, dtype=np.float32)
    else:
        # Pylians needs a writeable C-contiguous buffer; a read-only one makes MA silently no-op
        weights = np.require(mass, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
    if weights.shape != (n,):
        raise ValueError(f"masses must be one value or shape ({n},), got {weights.shape}")
    if not np.isfinite(weights).all():
        raise ValueError("masses contain non-finite values")
    if out is None:
        out = np.zeros((grid,) * 3, dtype=np.float32)
    elif out.shape != (grid,) * 3 or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(grid,) * 3}, got {out.dtype} {out.shape}")
    if n == 0:
        return out
    pos32 = np.mod(pos, box).astype(np.float32)
    pos32[pos32 >= box] = 0.0  # float32 rounding can map box - eps onto box
    masl.MA(pos32, out, float(box), mas, W=weights, verbose=False)
    return out


Chunk = tuple[np.ndarray, "np.ndarray | float"]


def paint_chunks(
    chunks: Iterable[Chunk],
    out: np.ndarray,
    box: float,
    mas: str = "CIC",
    n_chunks: int | None = None,
    desc: str | None = None,
    progress: bool = True,
) -> tuple[float, int]:
    """Paint ``(pos, mass)`` chunks one after another into ``out`` (a float32 ``N^3`` mesh).

    Args:
        chunks: iterable of ``(positions (n, 3) Mpc/h, masses (n,) or one mass, Msun/h)``.
        out: the mesh to add into (e.g. a memory-mapped store field).
        box: box side, Mpc/h.
        mas: mass-assignment scheme, one of ``PAINT_SCHEMES``.
        n_chunks: number of chunks, for the progress bar.
        desc: progress-bar label.
        progress: show a progress bar over chunks (stderr).

    Returns:
        The total input mass (Msun/h, float64) and the number of particles painted.
    """
    total, count = 0.0, 0
    for pos, mass in tqdm(chunks, total=n_chunks, desc=desc, unit="chunk", disable=not progress):
        paint(pos, mass, out.shape[0], box, mas, out=out)
        n = len(pos)
        total += float(mass) * n if np.ndim(mass) == 0 else float(np.sum(mass, dtype=np.float64))
        count += n
        del pos, mass  # free this chunk before the next one is read
    return total, count


def paint_field(
    store: FieldStore,
    name: str,
    chunks: Iterable[Chunk],
    mas: str = "CIC",
    n_chunks: int | None = None,
    progress: bool = True,
    **attrs: Any,
) -> tuple[float, int]:
    """Paint ``chunks`` into a new field ``name`` of ``store``, written atomically.

    The chunks are painted into an ordinary float32 ``grid^3`` array (one field of memory: 4 GiB
    at 1024^3, 32 GiB at 2048^3), written with :meth:`FieldStore.write` once every chunk is in;
    the field appears in the store only then. Painting into a memory-mapped field instead
    re-dirties pages all over it with every chunk (a chunk's particles reach the whole grid), and
    the kernel's write-back then wrote the 4 GiB field ~80 times over (320 GB at 1024^3 before
    painting was stopped). ``attrs`` are recorded in the field's metadata.

    Returns:
        The total input mass (Msun/h) and the number of particles painted.
    """
    if mas not in PAINT_SCHEMES:
        raise ValueError(f"mas must be one of {PAINT_SCHEMES}, got {mas!r}")
    out = np.zeros((store.grid,) * 3, dtype=np.float32)
    total, count = paint_chunks(
        chunks, out, store.box, mas, n_chunks=n_chunks, desc=name, progress=progress
    )
    store.write(name, out, mas=mas, **attrs)
    return total, count
