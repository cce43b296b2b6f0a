"""Gaussian initial conditions: the linear density field on the particle lattice.

Discrete FFT convention (numpy): ``delta_k = sum_x delta(x) exp(-i k.x)``, so a field with power
spectrum ``P(k)`` has ``<|delta_k|^2> = P(k) N^6 / L^3``. Unit white noise in real space has
``<|w_k|^2> = N^3``, hence ``delta_k = w_k sqrt(P(k) N^3 / L^3)``; drawing the noise in real
space makes the field real and its phases reproducible for a given seed and grid.

Paired fixed-amplitude ICs (Angulo & Pontzen 2016): ``fixed_amplitude`` sets every ``|w_k|`` to
its rms ``sqrt(N^3)`` (keeping the phases), so the ICs' power has no cosmic variance;
``phase_flip`` negates the field (phases + pi), the partner of a pair whose mean cancels the
leading odd-order variance of the nonlinear statistics.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from dm2gal.sim.cosmology import Cosmology


def wavenumbers(n: int, box: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable ``(kx, ky, kz)`` in h/Mpc of the ``rfftn`` of an ``n^3`` grid, side ``box``."""
    kf = 2.0 * np.pi / box
    k = np.fft.fftfreq(n, d=1.0 / n) * kf
    kz = np.fft.rfftfreq(n, d=1.0 / n) * kf
    return k[:, None, None], k[None, :, None], kz[None, None, :]


def linear_delta_k(
    n: int,
    box: float,
    seed: int,
    cosmo: Cosmology,
    workers: int = -1,
    fixed_amplitude: bool = False,
    phase_flip: bool = False,
) -> np.ndarray:
    """Return the ``rfftn`` of a Gaussian linear overdensity at z=0 on an ``n^3`` grid.

    Args:
        n: grid side (the particle lattice).
        box: box side, Mpc/h.
        seed: seed of the white noise (numpy PCG64).
        cosmo: cosmology giving the linear ``P(k)`` at z=0.
        workers: FFT threads (scipy.fft convention, -1 = all cores).
        fixed_amplitude: fix every mode's amplitude to its rms (Angulo & Pontzen 2016).
        phase_flip: negate the field (the pair partner of the same seed).
    """
    noise = np.random.default_rng(seed).standard_normal((n, n, n))
    delta_k = fft.rfftn(noise, workers=workers)
    del noise
    if fixed_amplitude:
        delta_k *= np.sqrt(n**3) / np.maximum(np.abs(delta_k), 1e-300)
    if phase_flip:
        delta_k *= -1.0
    kx, ky, kz = wavenumbers(n, box)
    kmag = np.sqrt(kx**2 + ky**2 + kz**2)
    amplitude = np.zeros_like(kmag)
    knyq = np.pi * n / box
    # no mean mode; no Nyquist modes (their gradients are ill-defined on the lattice)
    nonzero = (kmag > 0) & (np.abs(kx) < knyq) & (np.abs(ky) < knyq) & (np.abs(kz) < knyq)
    amplitude[nonzero] = np.sqrt(cosmo.power_linear(kmag[nonzero]) * n**3 / box**3)
    delta_k *= amplitude
    return delta_k
