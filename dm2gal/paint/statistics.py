"""Statistics of galaxy catalogues in a periodic box: stellar-mass function, real-space xi(r)
and redshift-space multipoles, through halotools' ``mock_observables`` (pair counts with the
box's periodicity; ``s_mu_tpcf`` + ``tpcf_multipole`` for the multipoles). Positions Mpc/h,
masses Msun/h, velocities km/s; the line of sight is the z axis (plane-parallel)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from halotools.mock_observables import s_mu_tpcf, tpcf, tpcf_multipole

from dm2gal.infer.catalog import periodic
from dm2gal.sim.cosmology import Cosmology
from dm2gal.sim.pm import KMS_PER_H0_MPCH


@dataclass(frozen=True)
class StatBins:
    """Bins: stellar-mass function in ``smf_dex`` dex from ``smf_min`` Msun/h; xi(r) on
    ``r_bins`` log-spaced radii from ``r_min`` to ``r_max`` Mpc/h for galaxies above
    ``mass_cut``; multipoles on the same radii with ``mu_bins`` bins of mu."""

    smf_min: float = 1e9
    smf_dex: float = 0.25
    smf_max: float = 1e12
    r_min: float = 0.5
    r_max: float = 20.0
    r_bins: int = 12
    mass_cut: float = 1e10
    mu_bins: int = 20

    def smf_edges(self) -> np.ndarray:
        lo, hi = np.log10(self.smf_min), np.log10(self.smf_max)
        return np.arange(lo, hi + self.smf_dex / 2, self.smf_dex)

    def r_edges(self) -> np.ndarray:
        return np.geomspace(self.r_min, self.r_max, self.r_bins + 1)


def stellar_mass_function(mstar: np.ndarray, box: float, bins: StatBins) -> np.ndarray:
    """dn / dlog10 M*, per (Mpc/h)^3 per dex, in ``bins.smf_edges()``."""
    counts, _ = np.histogram(np.log10(mstar[mstar > 0]), bins.smf_edges())
    return counts / box**3 / bins.smf_dex


def correlation(pos: np.ndarray, mstar: np.ndarray, box: float, bins: StatBins) -> np.ndarray:
    """xi(r) of the galaxies above ``bins.mass_cut`` (natural estimator, periodic; NaN with
    fewer than two such galaxies)."""
    sample = periodic(pos[mstar > bins.mass_cut], box)
    if len(sample) < 2:
        return np.full(bins.r_bins, np.nan)
    return tpcf(sample, bins.r_edges(), period=box)


def rsd_scale(redshift: float, omega_m: float) -> float:
    """``(1 + z) / H(z)`` in Mpc/h per km/s (flat LCDM, ``H = 100 E(z)`` h km/s/Mpc): how far
    a peculiar velocity of 1 km/s along the line of sight moves a galaxy in redshift space
    (0.01 at z = 0)."""
    a = 1.0 / (1.0 + redshift)
    return (1.0 + redshift) / (KMS_PER_H0_MPCH * float(Cosmology(Om0=omega_m, Ob0=0.0).E(a)))


def redshift_space(pos: np.ndarray, vel: np.ndarray, box: float, scale: float) -> np.ndarray:
    """Positions moved along z by ``vel_z * scale`` (:func:`rsd_scale`), wrapped into the box
    (plane-parallel, distant observer)."""
    moved = np.array(pos, dtype=np.float64)
    moved[:, 2] += vel[:, 2] * scale
    return periodic(moved, box)


def multipoles(
    pos: np.ndarray,
    vel: np.ndarray,
    mstar: np.ndarray,
    box: float,
    bins: StatBins,
    scale: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Redshift-space monopole and quadrupole (z line of sight, velocities times ``scale``
    Mpc/h per km/s: :func:`rsd_scale`) of the galaxies above ``bins.mass_cut``; None when any
    of them has no velocity (or fewer than two)."""
    keep = mstar > bins.mass_cut
    if not np.isfinite(vel[keep]).all() or keep.sum() < 2:
        return None
    redshifted = redshift_space(pos[keep], vel[keep], box, scale)
    mu = np.linspace(0, 1, bins.mu_bins + 1)
    xi_s_mu = s_mu_tpcf(redshifted, bins.r_edges(), mu, period=box)
    return tpcf_multipole(xi_s_mu, mu, order=0), tpcf_multipole(xi_s_mu, mu, order=2)
