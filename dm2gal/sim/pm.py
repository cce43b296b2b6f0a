"""Particle-mesh gravity in a periodic box, FastPM kick-drift-kick steps and a PGD correction.

Comoving positions ``x`` (Mpc/h) and momenta ``p = a^2 dx/dt`` (time in 1/H0) obey
``dx/da = p / (a^3 E)`` and ``dp/da = F / (a^2 E)``, with ``F = -grad phi`` and
``lap phi = 1.5 Om0 delta``. The FastPM integrator (Feng et al. 2016) uses the linear-theory
growth of ``x`` and ``p`` over each step, so linear growth is exact for any number of steps.
Density is painted and forces are read back with Pylians' CIC on a force mesh (normally finer
than the particle lattice). As in FastPM, the Green's function is the plain ``-1/k^2`` with a
4-point finite-difference gradient and no CIC deconvolution: deconvolving amplifies the
particle-lattice pattern on a finer mesh and drives spurious growth near the Nyquist scale.

What loses small-scale power (64^3 particles, 32 Mpc/h, against 100 steps on a 4x finer mesh
of the same seed; P ratio in quarters of the particle Nyquist ``k_N``): 10 steps linear in
``a`` give 0.89 / 0.70 / 0.49 / 0.34 (seed 1); steps in ``log a`` are worse (0.72 / 0.34 / 0.17 /
0.12: halos form late, where ``log a`` steps are coarse); an exact ``ik`` gradient or CIC
deconvolution change < 3%. At 10 steps the time step dominates (a 4x mesh gives 0.87 / 0.67 /
0.45 / 0.31); from 20 steps on, the 2x mesh does (20, 40 and 100 steps all reach only ~0.75
near k_N), while 40 steps on a 4x mesh reach 0.89-0.97 there (12 seeds). Hence steps stay
linear in ``a`` and a run is finished by potential gradient descent (PGD, Dai, Feng & Seljak
2018, see :func:`pgd_shift`), one extra force evaluation that moves particles down the
band-filtered potential, calibrated per force mesh and step count (:data:`PGD_CALIBRATIONS`).
The mock's default is 20 steps on a 2x mesh + PGD: within 5% for k <= k_N / 2 on 11 of 12
seeds at 64^3 / 32 Mpc/h and 0.89-1.13 near k_N; its higher-accuracy setting, 40 steps on a 4x
mesh + PGD (~8x the CPU), is within 6% in every band on all 12.
All of it is numpy/scipy/Pylians: FastPM, pmesh and
jaxpm are heavy installs (MPI or jax) and no faster on 2 cores for 128^3 particles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
        return self._forces(pos, self.kernel)

    def pgd_kernel(self, k_long: float, k_short: float) -> np.ndarray:
        """The potential kernel times the PGD band filter ``exp(-(k_l/k)^2 - (k/k_s)^2)``."""
        k = wavenumbers(self.mesh, self.box)
        k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
        k2[0, 0, 0] = 1.0
        band = np.exp(-(k_long**2) / k2 - k2 / k_short**2).astype(np.float32)
        return self.kernel * band

    def _forces(self, pos: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """``-grad`` of the potential ``kernel * delta_k`` of the particles, at the particles."""
        import MAS_library as masl  # lazy: GPU machines run without Pylians

        n = len(pos)
        counts = paint(pos, 1.0, self.mesh, self.box)
        counts *= self.mesh**3 / n
        counts -= 1.0
        phi_k = fft.rfftn(counts, workers=self.workers)
        del counts
        phi_k *= kernel
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


def pgd_shift(
    pos: np.ndarray,
    solver: ParticleMesh,
    alpha: float,
    k_long: float,
    k_short: float,
    max_shift: float,
) -> np.ndarray:
    """Potential gradient descent (Dai, Feng & Seljak 2018): sharpen halos of a few-step run.

    Moves every particle by ``alpha`` times the force of the band-filtered potential
    (``k_long`` removes the large-scale flow, ``k_short`` the mesh noise), which restores the
    compactness of halos that a coarse time step or force mesh leaves puffy, but by at most
    ``max_shift`` Mpc/h, where the linear shift can overshoot the centres of the most massive
    halos (measured in :data:`PGD_CALIBRATIONS`). Returns the new positions.
    """
    shift = alpha * solver._forces(pos, solver.pgd_kernel(k_long, k_short))
    norm = np.sqrt(np.einsum("ij,ij->i", shift, shift))
    shift *= np.minimum(1.0, max_shift / np.maximum(norm, 1e-30))[:, None]
    return np.mod(pos + shift, solver.box)


def evolve(
    pos: np.ndarray,
    mom: np.ndarray,
    steps: np.ndarray,
    cosmo: Cosmology,
    solver: ParticleMesh,
) -> tuple[np.ndarray, np.ndarray]:
    """Advance particles through the scale factors ``steps`` (FastPM KDK); return the final
    positions and momenta, both at ``steps[-1]`` (the last half kick is taken, one force
    evaluation more than the positions need; :func:`peculiar_velocity` turns momenta into km/s).

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
        acc = solver.accelerations(pos)
        mom += acc * ((cosmo.momentum_factor(a1) - gp_half) / cosmo.force_factor(a1))
    return pos, mom


#: km/s per H0 Mpc/h: a comoving speed of 1 Mpc/h per 1/H0 (H0 = 100 h km/s/Mpc)
KMS_PER_H0_MPCH = 100.0


def peculiar_velocity(mom: np.ndarray, a: float) -> np.ndarray:
    """Peculiar velocities ``a dx/dt = p / a`` in km/s of momenta ``p = a^2 dx/dt`` (H0 Mpc/h)
    at scale factor ``a``."""
    return mom * (KMS_PER_H0_MPCH / a)


@dataclass(frozen=True)
class PGDCalibration:
    """PGD parameters for one force-mesh factor, fitted at 0.5 Mpc/h mean particle spacing.

    ``steps`` maps a number of linear-in-a steps to ``(alpha, k_long / k_N, k_short / k_N)``,
    k_N = pi * particles / box the particle Nyquist wavenumber; between calibrated step counts
    log alpha and the k ratios are interpolated in log steps. alpha scales as (mean particle
    spacing / 0.5 Mpc/h)^``spacing_slope``; shifts are capped at ``max_shift`` mean spacings.
    """

    steps: dict[int, tuple[float, float, float]]
    spacing_slope: float
    max_shift: float


PGD_SPACING = 0.5  # Mpc/h, the mean particle spacing of the calibration runs
# Fitted (Nelder-Mead on the mean squared log P ratio, k <= k_N) to a 100-step run on a 4x
# finer mesh of the same ICs (64^3 particles, 32 Mpc/h). Checked on other seeds and sizes by
# tests/test_sim_accuracy.py and benchmarks/bench_mock.py.
PGD_CALIBRATIONS: dict[int, PGDCalibration] = {
    # The default 2x mesh, fitted on seed 1. For 20 steps (the default) k_short was then raised
    # from the fitted 1.43 to 1.8 on seeds 1-3: the fit to one seed left another 11% low at
    # 3/4-1 k_N. At 128^3 / 75 Mpc/h (0.586 Mpc/h) the 0.5 Mpc/h alpha over-sharpens (1.05 /
    # 1.11 / 1.16 in the upper bands at 64^3 / 37.5, seed 1) and 0.0015 = 0.00212 (0.586 /
    # 0.5)^-2.2 matches (0.99-1.02). Uncapped, the linear shift overshoots the centres of the
    # most massive halos (one seed of four gained 21% / 46% in the upper bands; capped at 0.2
    # mean spacings, 6% / 13%).
    2: PGDCalibration(
        steps={
            5: (0.01877, 0.0568, 0.741),  # 5 steps stay 15% low at k_N / 4 - k_N / 2: smoke only
            10: (0.00584, 0.0521, 0.950),
            20: (0.00212, 0.0416, 1.8),
            40: (0.00138, 0.0393, 1.575),
        },
        spacing_slope=-2.2,
        max_shift=0.2,
    ),
    # The higher-accuracy setting, 40 steps on a 4x mesh (alpha and k_short fitted on seeds 1-3,
    # k_long kept at the 2x value): 0.98-1.06 of the converged power in every quarter of k_N on
    # all 12 seeds at 64^3 / 32 Mpc/h, where 40 plain steps leave 0.89-0.97 near k_N. At 64^3 /
    # 37.5 Mpc/h (seed 1) the unscaled alpha fits best (0.99-1.01; slope -2.2: 0.98 near k_N)
    # and at 128^3 / 75 Mpc/h it gives 0.99-1.03 (seeds 1-4); no cap is needed: the 4x mesh
    # already resolves the halo centres.
    4: PGDCalibration(
        steps={40: (3.06e-4, 0.0416, 1.348)},
        spacing_slope=0.0,
        max_shift=np.inf,
    ),
}


def pgd_parameters(
    steps: int, particles: int, box: float, pm_factor: int = 2
) -> tuple[float, float, float, float]:
    """Calibrated PGD ``(alpha, k_long, k_short, max_shift)`` (h/Mpc, Mpc/h) for a run."""
    if pm_factor not in PGD_CALIBRATIONS:
        raise ValueError(
            f"PGD is calibrated for pm_factor {sorted(PGD_CALIBRATIONS)}, got {pm_factor}"
        )
    calibration = PGD_CALIBRATIONS[pm_factor]
    known = sorted(calibration.steps)
    if not known[0] <= steps <= known[-1]:
        raise ValueError(
            f"PGD on a {pm_factor}x mesh is calibrated for {known[0]} to {known[-1]} steps, "
            f"got {steps}"
        )
    table = np.array([calibration.steps[s] for s in known])
    x = np.log(steps)
    xs = np.log(known)
    alpha = float(np.exp(np.interp(x, xs, np.log(table[:, 0]))))
    alpha *= (box / particles / PGD_SPACING) ** calibration.spacing_slope
    k_nyquist = np.pi * particles / box
    k_long = float(np.interp(x, xs, table[:, 1])) * k_nyquist
    k_short = float(np.interp(x, xs, table[:, 2])) * k_nyquist
    return alpha, k_long, k_short, calibration.max_shift * box / particles
