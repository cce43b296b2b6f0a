"""Particles and catalogues -> CIC mass grids (Pylians ``MAS_library``).

Positions are comoving Mpc/h, masses Msun/h; the output is mass per voxel (float32) on an
``N^3`` grid of a periodic box of side ``L``. Pylians is the reference painter; this module
validates inputs first because ``MAS_library.MA`` calls ``sys.exit()`` on bad arguments.
"""

from __future__ import annotations

import numpy as np

MAS_NAMES = ("NGP", "CIC", "TSC", "PCS")


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
        mas: mass-assignment scheme, one of ``MAS_NAMES``.
        out: float32 ``grid^3`` mesh to add into (a new zero mesh when ``None``).
    """
    import MAS_library as masl

    if mas not in MAS_NAMES:
        raise ValueError(f"mas must be one of {MAS_NAMES}, got {mas!r}")
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
    weights = np.broadcast_to(np.asarray(mass, dtype=np.float32), (n,))
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
    masl.MA(pos32, out, float(box), mas, W=np.ascontiguousarray(weights), verbose=False)
    return out
