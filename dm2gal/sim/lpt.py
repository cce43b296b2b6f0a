"""Second-order Lagrangian perturbation theory (2LPT) displacements on the particle lattice.

With ``phi1`` solving ``lap phi1 = delta_L`` (linear overdensity at z=0) and ``phi2`` solving
``lap phi2 = sum_{i<j} (phi1_ii phi1_jj - phi1_ij^2)``, particles move to
``x = q - D1 grad phi1 + D2 grad phi2`` with ``D2 = -3/7 D1^2`` (Scoccimarro 1998;
Crocce, Pueblas & Scoccimarro 2006). Lengths in Mpc/h.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from dm2gal.sim.ics import wavenumbers

_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def _inverse_laplacian(field_k: np.ndarray, k: tuple[np.ndarray, ...]) -> np.ndarray:
    """Return ``lap^-1`` of an ``rfftn`` field (zero mean mode)."""
    k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    k2[0, 0, 0] = 1.0
    out = -field_k / k2
    out[0, 0, 0] = 0.0
    return out


def _gradient(phi_k: np.ndarray, k: tuple[np.ndarray, ...], n: int, workers: int) -> np.ndarray:
    """Return the real-space gradient ``(n^3, 3)`` of an ``rfftn`` potential."""
    out = np.empty((n, n, n, 3))
    for axis in range(3):
        out[..., axis] = fft.irfftn(1j * k[axis] * phi_k, s=(n,) * 3, workers=workers)
    return out.reshape(-1, 3)


def lpt_displacements(
    delta_k: np.ndarray, box: float, workers: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """First- and second-order displacement fields per lattice particle at unit growth.

    Args:
        delta_k: ``rfftn`` of the linear overdensity at z=0 on an ``n^3`` lattice.
        box: box side, Mpc/h.
        workers: FFT threads.

    Returns:
        ``(psi1, psi2)``, each ``(n^3, 3)`` in Mpc/h, with ``x = q + D1 psi1 + D2 psi2`` and
        particles ordered as ``np.indices((n, n, n))`` flattened (C order).
    """
    n = delta_k.shape[0]
    k = wavenumbers(n, box)
    phi1_k = _inverse_laplacian(delta_k, k)
    psi1 = -_gradient(phi1_k, k, n, workers)

    hessian = {
        (i, j): fft.irfftn(-k[i] * k[j] * phi1_k, s=(n,) * 3, workers=workers) for i, j in _PAIRS
    }
    source = (
        hessian[0, 0] * hessian[1, 1]
        + hessian[0, 0] * hessian[2, 2]
        + hessian[1, 1] * hessian[2, 2]
        - hessian[0, 1] ** 2
        - hessian[0, 2] ** 2
        - hessian[1, 2] ** 2
    )
    del hessian
    phi2_k = _inverse_laplacian(fft.rfftn(source, workers=workers), k)
    psi2 = _gradient(phi2_k, k, n, workers)
    return psi1, psi2


def lattice(n: int, box: float) -> np.ndarray:
    """Unperturbed particle positions ``(n^3, 3)`` at the lattice points ``i * box / n``."""
    q = np.indices((n, n, n), dtype=float).reshape(3, -1).T
    return q * (box / n)
