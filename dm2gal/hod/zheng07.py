"""Zheng+07 HOD with a Moster+13 stellar-to-halo-mass relation, fitted on the training region.

* Occupations: halotools' ``Zheng07Cens`` / ``Zheng07Sats`` mean occupations (Zheng+07 eqs 2
  and 5, satellites not modulated by the central occupation), Bernoulli centrals and Poisson
  satellites. Fitted by maximum likelihood on binned counts: in log10-mass bins of width
  ``fit_bin_width``, the expected number of centrals (satellites) is the sum of the mean
  occupation over the training gravity-only hosts of the bin, the observed number is the count
  of training centrals (satellites) whose ``host_mass`` falls in the bin, and the counts are
  Poisson. This fits the number density and its mass dependence of the training region.
* Central stellar mass: halotools' ``Moster13SmHm`` mean relation at z = 0 (parameters m10,
  n10, beta10, gamma10) with lognormal scatter, fitted by least squares in log10 M* on the
  training centrals against their host mass; the scatter is the rms residual (dex). halotools
  evaluates Moster's formula in Msun with h = 0.704 (m10 is log10 M1 in those units) and
  returns M* times h^2; the fit absorbs that convention, so the mean relation is in Msun/h.
* Satellite stellar mass: lognormal around a power law in host mass,
  ``log10 M* = sat_a + sat_b (log10 M - 12)``, least squares on the training satellites
  (satellites have no subhalo mass here, so the central SHMR does not apply to them).
* Satellite positions: isotropic NFW radii (halotools ``NFWProfile``: virial radius and
  Dutton & Maccio 14 concentration from the host mass), wrapped periodically.
* The mean field: each host's expected central M* (mean occupation x the lognormal mean of
  the SHMR) at its centre, and its expected satellite M* spread over ``mean_offsets`` fixed
  points of its NFW profile (radii at evenly spaced mass quantiles, Fibonacci directions).

The random draws use one seeded ``numpy.random.Generator``, not halotools' ``mc_*`` methods,
which reseed numpy's global generator per call; halotools supplies the mean relations and the
NFW profile.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize
from scipy.special import lambertw

from dm2gal.errors import integer_option
from dm2gal.hod.base import HOD, IsHeldout, fibonacci_directions, training_galaxies
from dm2gal.hod.environment import Environment
from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog
from dm2gal.sim.galaxies import lognormal_boost

SHMR_KEYS = ("m10", "n10", "beta10", "gamma10")
MIN_SATELLITES = 3


class Zheng07HOD(HOD):
    """Zheng+07 occupations + Moster+13 SHMR; the arguments are the starting (unfitted) values.

    Args:
        logMmin, sigma_logM, logM0, logM1, alpha: Zheng+07 parameters (log10 Msun/h, dex).
        m10, n10, beta10, gamma10: Moster+13 z = 0 parameters; scatter: lognormal dex.
        sat_a, sat_b, sat_scatter: satellite log10 M* relation (see the module docstring).
        fit_bin_width: log10-mass bin width of the occupation likelihood (dex).
        mean_offsets: points of each host's NFW profile that spread the mean field's satellites.
        name: benchmark name (the fields are ``hod_<name>_mean`` and ``hod_<name>_draw``).
    """

    def __init__(
        self,
        logMmin: float = 12.0,  # noqa: N803 (Zheng+07 names)
        sigma_logM: float = 0.25,  # noqa: N803
        logM0: float = 12.0,  # noqa: N803
        logM1: float = 13.0,  # noqa: N803
        alpha: float = 1.0,
        m10: float = 11.59,
        n10: float = 0.0351,
        beta10: float = 1.376,
        gamma10: float = 0.608,
        scatter: float = 0.2,
        sat_a: float = 9.0,
        sat_b: float = 0.5,
        sat_scatter: float = 0.3,
        fit_bin_width: float = 0.1,
        mean_offsets: int = 64,
        name: str = "zheng07",
    ):
        # lazy: halotools is heavy and absent on GPU machines
        from halotools.empirical_models import Moster13SmHm, NFWProfile, Zheng07Cens, Zheng07Sats

        if not sigma_logM > 0:
            raise ValueError(f"sigma_logM must be > 0 dex, got {sigma_logM}")
        if not fit_bin_width > 0:
            raise ValueError(f"fit_bin_width must be > 0 dex, got {fit_bin_width}")
        if min(scatter, sat_scatter) < 0:
            raise ValueError(
                f"scatter and sat_scatter must be >= 0 dex, got {scatter}, {sat_scatter}"
            )
        self.cens = Zheng07Cens()
        self.sats = Zheng07Sats(modulate_with_cenocc=False)
        self.smhm = Moster13SmHm()
        self.nfw = NFWProfile(redshift=0.0, mdef="vir", conc_mass_model="dutton_maccio14")
        self.params = dict(
            logMmin=logMmin, sigma_logM=sigma_logM, logM0=logM0, logM1=logM1, alpha=alpha,
            m10=m10, n10=n10, beta10=beta10, gamma10=gamma10, scatter=scatter,
            sat_a=sat_a, sat_b=sat_b, sat_scatter=sat_scatter,
        )  # fmt: skip
        self.fit_bin_width = float(fit_bin_width)
        self.mean_offsets = integer_option(mean_offsets, "hod.mean_offsets", 1)
        self.name = name
        self.fitted = False

    # -- mean relations (halotools) ------------------------------------------------------------
    def _set(self, **params: float) -> None:
        self.params.update({k: float(v) for k, v in params.items()})
        self.cens.param_dict.update({k: self.params[k] for k in ("logMmin", "sigma_logM")})
        self.sats.param_dict.update({k: self.params[k] for k in ("logM0", "logM1", "alpha")})
        self.smhm.param_dict.update({k: self.params[k] for k in SHMR_KEYS})

    def mean_ncen(self, mass: np.ndarray) -> np.ndarray:
        """Zheng+07 mean central occupation of hosts of ``mass`` Msun/h."""
        self._set()
        return self.cens.mean_occupation(prim_haloprop=np.asarray(mass, dtype=np.float64))

    def mean_nsat(self, mass: np.ndarray) -> np.ndarray:
        """Zheng+07 mean satellite occupation of hosts of ``mass`` Msun/h."""
        self._set()
        return self.sats.mean_occupation(prim_haloprop=np.asarray(mass, dtype=np.float64))

    def mean_log_mstar(self, mass: np.ndarray) -> np.ndarray:
        """log10 of the Moster+13 (z = 0) mean central stellar mass (Msun/h) at host ``mass``."""
        self._set()
        m = np.asarray(mass, dtype=np.float64)
        return np.log10(self.smhm.mean_stellar_mass(prim_haloprop=m, redshift=0.0))

    # -- fit ------------------------------------------------------------------------------------
    def fit(
        self,
        halos: HaloCatalog,
        galaxies: GalaxyCatalog,
        is_heldout: IsHeldout,
        box: float,
        env: Environment | None = None,
    ) -> Zheng07HOD:
        """Fit occupations, SHMR and satellite masses on the training region (``box`` and
        ``env`` unused)."""
        h_tr, g_tr = training_galaxies(halos, galaxies, is_heldout)
        central = np.asarray(galaxies.central, dtype=bool)
        cen, sat = g_tr & central, g_tr & ~central
        if cen.sum() < 10 or h_tr.sum() < 10:
            raise ValueError(
                "Zheng07HOD.fit needs >= 10 training hosts and >= 10 training centrals, got "
                f"{h_tr.sum()} and {cen.sum()}"
            )
        log_host = np.log10(np.asarray(galaxies.host_mass, dtype=np.float64))
        mstar = np.asarray(galaxies.mstar, dtype=np.float64)
        fit_sats = sat.sum() >= MIN_SATELLITES
        if not fit_sats:
            warnings.warn(
                f"Zheng07HOD.fit: only {sat.sum()} training satellites (< {MIN_SATELLITES}); "
                "the benchmark gets no satellites",
                stacklevel=2,
            )
            self._set(logM1=np.inf)
        log_sat = log_host[sat] if fit_sats else None
        self._fit_occupations(np.log10(halos.mass[h_tr]), log_host[cen], log_sat)
        self._fit_shmr(log_host[cen], np.log10(mstar[cen]))
        self.fitted = True
        if not fit_sats:
            return self
        slope, icpt = np.polyfit(log_host[sat] - 12.0, np.log10(mstar[sat]), 1)
        resid = np.log10(mstar[sat]) - (icpt + slope * (log_host[sat] - 12.0))
        self._set(sat_a=icpt, sat_b=slope, sat_scatter=np.sqrt(np.mean(resid**2)))
        return self

    def _fit_occupations(
        self, log_m: np.ndarray, log_cen: np.ndarray, log_sat: np.ndarray | None
    ) -> None:
        """Binned Poisson maximum likelihood of the counts (satellites skipped if ``None``)."""
        w = self.fit_bin_width
        lo, hi = log_m.min(), log_m.max()
        edges = lo + w * np.arange(int(np.floor((hi - lo) / w)) + 2)
        n_bins = len(edges) - 1

        def bin_of(x: np.ndarray) -> np.ndarray:
            return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)

        # FoF masses repeat (multiples of the particle mass): evaluate each mass once
        log_u, count = np.unique(log_m, return_counts=True)
        mass_u, bin_u = 10.0**log_u, bin_of(log_u)
        n_host = np.bincount(bin_u, weights=count, minlength=n_bins)
        obs_cen = np.bincount(bin_of(log_cen), minlength=n_bins)
        obs_sat = (
            np.zeros(n_bins) if log_sat is None else np.bincount(bin_of(log_sat), minlength=n_bins)
        )

        def nll(mean_occ: Any, keys: tuple[str, ...], obs: np.ndarray) -> Any:
            def f(x: np.ndarray) -> float:
                self._set(**dict(zip(keys, x, strict=True)))
                e = np.bincount(bin_u, weights=count * mean_occ(mass_u), minlength=n_bins)
                e = np.maximum(e, 1e-300)
                return float(np.sum(e - obs * np.log(e)))

            return f

        centre = 0.5 * (edges[:-1] + edges[1:])
        with np.errstate(divide="ignore", invalid="ignore"):
            frac, nsat = obs_cen / n_host, obs_sat / n_host
        above = centre[np.nan_to_num(frac) >= 0.5]
        start_min = above[0] if len(above) else hi
        above = centre[np.nan_to_num(nsat) >= 1.0]
        start_m1 = above[0] if len(above) else hi + 0.5
        fits = (
            (self.mean_ncen, ("logMmin", "sigma_logM"), obs_cen,
             [start_min, 0.3], [(lo - 2.0, hi + 1.0), (0.01, 2.0)]),
            (self.mean_nsat, ("logM0", "logM1", "alpha"), obs_sat,
             [start_m1 - 1.0, start_m1, 1.0], [(lo - 3.0, hi), (lo - 1.0, hi + 2.0), (0.05, 3.0)]),
        )  # fmt: skip
        for mean_occ, keys, obs, x0, bounds in fits if log_sat is not None else fits[:1]:
            f = nll(mean_occ, keys, obs)
            x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
            res = minimize(f, x0, method="Nelder-Mead", bounds=bounds,
                           options={"xatol": 1e-5, "fatol": 1e-8, "maxiter": 4000})  # fmt: skip
            self._set(**dict(zip(keys, res.x, strict=True)))

    def _fit_shmr(self, log_host: np.ndarray, log_mstar: np.ndarray) -> None:
        def resid(x: np.ndarray) -> np.ndarray:
            self._set(m10=x[0], n10=10.0 ** x[1], beta10=x[2], gamma10=x[3])
            return self.mean_log_mstar(10.0**log_host) - log_mstar

        x0 = [self.params["m10"], np.log10(self.params["n10"])]
        x0 += [self.params["beta10"], self.params["gamma10"]]
        lower, upper = [8.0, -5.0, 0.01, 0.0], [16.0, 0.0, 5.0, 3.0]
        res = least_squares(resid, np.clip(x0, lower, upper), bounds=(lower, upper))
        r = resid(res.x)
        self._set(scatter=np.sqrt(np.mean(r**2)))

    # -- sample ---------------------------------------------------------------------------------
    def host_model(
        self, halos: HaloCatalog, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per host: mass (Msun/h), mean central and satellite occupations, and the mean
        log10 M* of its central (before scatter)."""
        self._require_fitted()
        if not box > 0:
            raise ValueError(f"box size must be > 0 Mpc/h, got {box}")
        mass = np.asarray(halos.mass, dtype=np.float64)
        return mass, self.mean_ncen(mass), self.mean_nsat(mass), self.mean_log_mstar(mass)

    def sample(
        self, halos: HaloCatalog, seed: int, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Populate every host; return positions (Mpc/h, in ``[0, box)``) and M* (Msun/h)."""
        mass, ncen, nsat, log_mstar = self.host_model(halos, box, env)
        rng = np.random.default_rng(seed)
        p = self.params
        has_cen = rng.random(len(mass)) < ncen
        log_cen = log_mstar[has_cen] + p["scatter"] * rng.standard_normal(int(has_cen.sum()))

        n_sat = rng.poisson(nsat)
        sat_host = np.repeat(np.arange(len(mass)), n_sat)
        log_msat = self.mean_log_msat(mass[sat_host])
        log_msat = log_msat + p["sat_scatter"] * rng.standard_normal(len(sat_host))
        x = nfw_radius_quantile(rng.random(len(sat_host)), self._concentration(mass[sat_host]))
        direction = rng.standard_normal((len(sat_host), 3))
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-300)
        offset = direction * (x * self._virial_radius(mass[sat_host]))[:, None]

        pos = np.concatenate([halos.pos[has_cen], halos.pos[sat_host] + offset])
        mstar = 10.0 ** np.concatenate([log_cen, log_msat])
        return np.mod(pos, box), mstar

    def mean(
        self, halos: HaloCatalog, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected central M* at each host's centre, expected satellite M* over fixed points
        of its NFW profile (see the module docstring)."""
        mass, ncen, nsat, log_mstar = self.host_model(halos, box, env)
        p = self.params
        cen = ncen * 10.0**log_mstar * lognormal_boost(p["scatter"])
        hosts = np.flatnonzero(nsat > 0)
        sat = nsat[hosts] * 10.0 ** self.mean_log_msat(mass[hosts])
        sat *= lognormal_boost(p["sat_scatter"])
        n = self.mean_offsets
        u = (np.arange(n) + 0.5) / n
        x = nfw_radius_quantile(u[None, :], self._concentration(mass[hosts])[:, None])
        radius = x * self._virial_radius(mass[hosts])[:, None]
        offset = radius[..., None] * fibonacci_directions(n)[None]
        sat_pos = halos.pos[hosts][:, None, :] + offset
        pos = np.concatenate([halos.pos, sat_pos.reshape(-1, 3)])
        mstar = np.concatenate([cen, np.repeat(sat / n, n)])
        return np.mod(pos, box), mstar

    def mean_log_msat(self, mass: np.ndarray) -> np.ndarray:
        """log10 of the median satellite M* (Msun/h) in a host of ``mass`` Msun/h."""
        p = self.params
        return p["sat_a"] + p["sat_b"] * (np.log10(mass) - 12.0)

    def _concentration(self, mass: np.ndarray) -> np.ndarray:
        if len(mass) == 0:
            return np.zeros(0)
        return self.nfw.conc_NFWmodel(prim_haloprop=mass)

    def _virial_radius(self, mass: np.ndarray) -> np.ndarray:
        """Virial radius (Mpc/h) of hosts of ``mass`` Msun/h (halotools)."""
        if len(mass) == 0:
            return np.zeros(0)
        return self.nfw.halo_mass_to_halo_radius(mass)

    def fitted_params(self) -> dict[str, Any]:
        self._require_fitted()
        return {k: float(v) for k, v in self.params.items()}


def nfw_radius_quantile(u: np.ndarray, conc: np.ndarray) -> np.ndarray:
    """Radius (in units of the virial radius) enclosing a fraction ``u`` of an NFW halo's mass.

    Solves m(y) = u m(c) for y = r / r_s, with m(y) = ln(1 + y) - y / (1 + y), exactly:
    1 / (1 + y) = -W0(-exp(-1 - u m(c))) (Lambert W, principal branch).
    """
    c = np.asarray(conc, dtype=np.float64)
    q = np.asarray(u, dtype=np.float64) * (np.log1p(c) - c / (1.0 + c))
    with np.errstate(invalid="ignore"):
        s = -lambertw(-np.exp(-1.0 - q), 0).real
    s = np.where(q > 0, s, 1.0)  # W0 is nan at its branch point -1/e (u = 0 -> radius 0)
    return (1.0 / s - 1.0) / c
