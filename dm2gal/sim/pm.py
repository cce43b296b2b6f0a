"""Particle-mesh gravity in a periodic box and FastPM kick-drift-kick time stepping.

Comoving positions ``x`` (Mpc/h) and momenta ``p = a^2 dx/dt`` (time in 1/H0) obey
``dx/da = p / (a^3 E)`` and ``dp/da = F / (a^2 E)``, with ``F = -grad phi`` and
``lap phi = 1.5 Om0 delta``. The FastPM integrator (Feng et al. 2016) uses the linear-theory
growth of ``x`` and ``p`` over each step, so linear growth is exact for any number of steps.
Density is painted and forces are read back with Pylians' CIC on a force mesh (normally finer
than the particle lattice). As in FastPM, the Green's function is the plain ``-1/k^2`` with a
4-point finite-difference gradient and no CIC deconvolution: deconvolving amplifies the
particle-lattice pattern on a finer mesh and drives spurious growth near the Nyquist scale.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import fft

from dm2gal.io.paint import paint
from dm2gal.sim.cosmology import Cosmology
from dm2gal.sim.ics import wavenumbers

log = logging.getLogger(__name__)


class ParticleMesh:
    """Periodic PM force solver on a ``mesh^3`` grid of a box of side ``box`` Mpc/h."""

    def __init__(self, mesh: int, box: float, omega_m: float, workers: int = -1):
        if int(mesh) != mesh or mesh < 2:
            raise ValueError(f"mesh must be an integer >= 2, got {mesh}")
        self.mesh = int(mesh)
        self.box = float(box)
        self.workers = workers
        cell = self.box / self.mesh
        k = wavenumbers(self.mesh, self.box)
        # 4-point finite-difference gradient (vanishes at the Nyquist frequency)
        self.grad = tuple(
            ((8.0 * np.sin(kk * cell) - np.sin(2.0 * kk * cell)) / (6.0 * cell)).astype(np.float32)
            for kk in k
        )
        k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
        k2[0, 0, 0] = 1.0
        self.kernel = (-1.5 * omega_m / k2).astype(np.float32)  # phi_k = kernel * delta_k
        self.kernel[0, 0, 0] = 0.0

    def accelerations(self, pos: np.ndarray) -> np.ndarray:
        """Return ``F = -grad phi`` at ``(n, 3)`` positions (Mpc/h), in units of H0^2 Mpc/h."""
        import MAS_library as masl

        n = len(pos)
        counts = paint(pos, 1.0, self.mesh, self.box)
        counts *= self.mesh**3 / n
        counts -= 1.0
        phi_k = fft.rfftn(counts, workers=self.workers)
        del counts
        phi_k *= self.kernel
        pos32 = np.mod(pos, self.box).astype(np.float32)
        pos32[pos32 >= self.box] = 0.0
        acc = np.empty((n, 3), dtype=np.float64)
        values = np.empty(n, dtype=np.float32)
        for axis in range(3):
            force = fft.irfftn(
                -1j * self.grad[axis] * phi_k, s=(self.mesh,) * 3, workers=self.workers
            )
            force = np.ascontiguousarray(force, dtype=np.float32)
            values[:] = 0.0
            masl.CIC_interp(force, self.box, pos32, values)
            acc[:, axis] = values
        return acc


def evolve(
    pos: np.ndarray,
    mom: np.ndarray,
    steps: np.ndarray,
    cosmo: Cosmology,
    solver: ParticleMesh,
) -> np.ndarray:
    """Advance particles through the scale factors ``steps`` (FastPM KDK); return final positions.

    Momenta are left half a step behind the positions at the end (they are not needed).

    Args:
        pos: ``(n, 3)`` positions at ``steps[0]``, Mpc/h (updated in place).
        mom: ``(n, 3)`` momenta ``a^2 dx/dt`` at ``steps[0]``, H0 Mpc/h (updated in place).
        steps: increasing scale factors, first = initial, last = final.
        cosmo: background cosmology.
        solver: the PM force solver.
    """
    steps = np.asarray(steps, dtype=float)
    if steps.ndim != 1 or len(steps) < 2 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"steps must be >= 2 increasing scale factors, got {steps}")
    acc = solver.accelerations(pos)
    for i, (a0, a1) in enumerate(zip(steps[:-1], steps[1:], strict=True)):
        ah = 0.5 * (a0 + a1)
        gp_half = cosmo.momentum_factor(ah)
        mom += acc * ((gp_half - cosmo.momentum_factor(a0)) / cosmo.force_factor(a0))
        pos += mom * ((cosmo.growth(a1) - cosmo.growth(a0)) / gp_half)
        np.mod(pos, solver.box, out=pos)
        log.info("PM step %d/%d: a = %.3f", i + 1, len(steps) - 1, a1)
        if i == len(steps) - 2:
            break  # final momenta are not needed: skip the last force evaluation
        acc = solver.accelerations(pos)
        mom += acc * ((cosmo.momentum_factor(a1) - gp_half) / cosmo.force_factor(a1))
    return pos
