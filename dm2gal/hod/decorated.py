"""A decorated HOD (Hearin et al. 2016): Zheng+07 with assembly bias in the environment.

The baseline is :class:`dm2gal.hod.zheng07.Zheng07HOD`, fitted as usual. The decoration splits
the hosts of each mass at the median of their environment (``log10(1 + delta)`` of the
gravity-only DM smoothed on ``env_radius`` Mpc/h, :mod:`dm2gal.hod.environment`), the
percentile taken among the training hosts of the same mass bin (``env_mass_bins`` equal log10
bins), and moves the upper and lower halves apart while keeping the mean over all hosts:

* occupations: halotools' ``AssembiasZheng07Cens`` / ``AssembiasZheng07Sats`` (Heaviside
  assembly bias, strengths in [-1, 1]), each strength fitted by the Poisson likelihood of the
  training counts per (mass bin of ``fit_bin_width``, half);
* central stellar mass: the same decoration of the SHMR, ``log10 M* +- shmr_shift`` dex for the
  upper / lower half, the shift the mean signed residual of the training centrals about the
  baseline SHMR (least squares), the lognormal scatter their rms about the decorated relation.

Satellite masses and NFW positions are the baseline's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from dm2gal.errors import ConfigError, integer_option
from dm2gal.hod.base import IsHeldout, training_galaxies
from dm2gal.hod.environment import Environment
from dm2gal.hod.zheng07 import Zheng07HOD
from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog

STRENGTHS = {
    "cens": "mean_occupation_centrals_assembias_param1",
    "sats": "mean_occupation_satellites_assembias_param1",
}


class DecoratedHOD(Zheng07HOD):
    """Zheng+07 + Moster+13 decorated with environmental assembly bias.

    Args:
        env_radius: smoothing radius of the environment, Mpc/h.
        env_mass_bins: equal log10-mass bins in which environment percentiles are taken.
        name: benchmark name (the fields are ``hod_<name>_mean`` and ``hod_<name>_draw``).
        Other arguments: see :class:`Zheng07HOD` (starting values of the baseline).
    """

    needs_environment = True

    def __init__(
        self,
        env_radius: float = 2.0,
        env_mass_bins: int = 10,
        name: str = "decorated",
        **baseline: Any,
    ):
        from halotools.empirical_models import AssembiasZheng07Cens, AssembiasZheng07Sats

        super().__init__(name=name, **baseline)
        if not float(env_radius) > 0:
            raise ConfigError(f"hod.env_radius must be > 0 Mpc/h, got {env_radius!r}")
        self.env_radius = float(env_radius)
        self.env_mass_bins = integer_option(env_mass_bins, "hod.env_mass_bins", 1)
        self.decorated = {"cens": AssembiasZheng07Cens(), "sats": AssembiasZheng07Sats()}
        self.shmr_shift = 0.0

    # -- environment percentiles ------------------------------------------------------------------
    def percentile(self, mass: np.ndarray, pos: np.ndarray, env: Environment) -> np.ndarray:
        """Each host's environment percentile among the training hosts of its mass bin."""
        return self._percentile_of(mass, env.at(pos, self.env_radius))

    def _percentile_of(self, mass: np.ndarray, log_env: np.ndarray) -> np.ndarray:
        b = self._env_bin(np.log10(mass))
        out = np.empty(len(b))
        for i in np.unique(b):
            ref = self.env_reference_[i] if len(self.env_reference_[i]) else self.env_all_
            out[b == i] = (np.searchsorted(ref, log_env[b == i]) + 0.5) / (len(ref) + 1)
        return out

    def _env_bin(self, log_mass: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.env_edges_, log_mass, side="right") - 1
        return np.clip(idx, 0, self.env_mass_bins - 1)

    def _decorated(self, kind: str, mass: np.ndarray, percentile: np.ndarray) -> np.ndarray:
        component = self.decorated[kind]
        keys = ("logMmin", "sigma_logM") if kind == "cens" else ("logM0", "logM1", "alpha")
        component.param_dict.update({k: self.params[k] for k in keys})
        return component.mean_occupation(prim_haloprop=mass, sec_haloprop_percentile=percentile)

    # -- fit --------------------------------------------------------------------------------------
    def fit(
        self,
        halos: HaloCatalog,
        galaxies: GalaxyCatalog,
        is_heldout: IsHeldout,
        box: float,
        env: Environment | None = None,
    ) -> DecoratedHOD:
        """The baseline fit, then the environment split and the decoration strengths."""
        env = self._require_environment(env)
        super().fit(halos, galaxies, is_heldout, box)
        h_tr, g_tr = training_galaxies(halos, galaxies, is_heldout)
        mass = np.asarray(halos.mass, dtype=np.float64)[h_tr]
        log_env = env.at(halos.pos[h_tr], self.env_radius)
        lo, hi = np.log10(mass).min(), np.log10(mass).max()
        self.env_edges_ = np.linspace(lo, hi, self.env_mass_bins + 1)
        b = self._env_bin(np.log10(mass))
        self.env_reference_ = [np.sort(log_env[b == i]) for i in range(self.env_mass_bins)]
        self.env_all_ = np.sort(log_env)
        h_pct = self._percentile_of(mass, log_env)

        central = np.asarray(galaxies.central, dtype=bool)
        host_mass = np.asarray(galaxies.host_mass, dtype=np.float64)
        cen, sat = g_tr & central, g_tr & ~central
        c_pct = self.percentile(host_mass[cen], galaxies.pos[cen], env)
        self._fit_strength("cens", mass, h_pct, host_mass[cen], c_pct)
        if np.isfinite(self.params["logM1"]):  # else the baseline found too few satellites
            s_pct = self.percentile(host_mass[sat], galaxies.pos[sat], env)
            self._fit_strength("sats", mass, h_pct, host_mass[sat], s_pct)

        resid = np.log10(galaxies.mstar[cen]) - self.mean_log_mstar(host_mass[cen])
        sign = np.where(c_pct > 0.5, 1.0, -1.0)
        self.shmr_shift = float(np.mean(sign * resid))
        # the scatter is what the decoration leaves: about the decorated relation, not the
        # baseline's (else the split adds its variance twice and the mean mass overshoots)
        self._set(scatter=np.sqrt(np.mean((resid - sign * self.shmr_shift) ** 2)))
        return self

    def _fit_strength(
        self,
        kind: str,
        host_mass: np.ndarray,
        host_pct: np.ndarray,
        galaxy_host_mass: np.ndarray,
        galaxy_pct: np.ndarray,
    ) -> None:
        """Maximum Poisson likelihood of the counts per (mass bin, environment half)."""
        w = self.fit_bin_width
        log_m = np.log10(host_mass)
        lo = log_m.min()
        n_bins = int(np.floor((log_m.max() - lo) / w)) + 1

        def cell(log_mass: np.ndarray, pct: np.ndarray) -> np.ndarray:
            b = np.clip(np.floor((log_mass - lo) / w).astype(int), 0, n_bins - 1)
            return 2 * b + (pct > 0.5)

        h_cell = cell(log_m, host_pct)
        observed = np.bincount(cell(np.log10(galaxy_host_mass), galaxy_pct), minlength=2 * n_bins)
        component = self.decorated[kind]

        def nll(strength: float) -> float:
            component.param_dict[STRENGTHS[kind]] = strength
            occ = self._decorated(kind, host_mass, host_pct)
            expected = np.maximum(np.bincount(h_cell, weights=occ, minlength=2 * n_bins), 1e-300)
            return float(np.sum(expected - observed * np.log(expected)))

        best = minimize_scalar(nll, bounds=(-1.0, 1.0), method="bounded")
        component.param_dict[STRENGTHS[kind]] = float(best.x)

    # -- draws and means --------------------------------------------------------------------------
    def host_model(
        self, halos: HaloCatalog, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The baseline's host model with decorated occupations and central SHMR."""
        mass, _, _, log_mstar = super().host_model(halos, box)
        pct = self.percentile(mass, halos.pos, self._require_environment(env))
        ncen = self._decorated("cens", mass, pct)
        nsat = (
            self._decorated("sats", mass, pct)
            if np.isfinite(self.params["logM1"])
            else np.zeros(len(mass))
        )
        return mass, ncen, nsat, log_mstar + np.where(pct > 0.5, 1.0, -1.0) * self.shmr_shift

    def fitted_params(self) -> dict[str, Any]:
        params = super().fitted_params()
        params |= {
            STRENGTHS[k]: float(c.param_dict[STRENGTHS[k]]) for k, c in self.decorated.items()
        }
        return params | {"shmr_shift": self.shmr_shift, "env_radius": self.env_radius}
