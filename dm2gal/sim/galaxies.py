"""Galaxies painted onto FoF halos: a stellar-to-halo-mass relation with environmental dependence.

Centrals sit at halo centres with ``log10 M* = log10 SHMR(M) + env_dex * e + N(0, scatter_dex)``,
where the SHMR is Moster, Naab & White (2013) at z=0 and ``e`` is the halo's large-scale
environment (``log10(1 + delta)`` of the DM field smoothed with a Gaussian of radius
``env_radius``) relative to its typical value at the halo's mass, in units of its scatter:
``e = (log_env - env_pivot - env_slope (log10 M - 12.5)) / env_std``. The relation is a fixed
part of the model, as the SHMR is, so a galaxy depends only on its surroundings: a residual
re-fitted in each box would make every galaxy depend on the whole box (on the five unseen
default boxes that alone moved the box's central stellar mass by -12% to +8% at
``env_dex`` 0.35, a shift no model of a galaxy's neighbourhood can learn). The mean relation
thus stays Moster+13 on average, but at fixed mass galaxies in denser surroundings are more
massive: a halo-mass-only HOD is not the truth. Satellites follow a power-law subhalo mass function
``dN/dln(mu) = sub_norm mu^-sub_slope`` (``mu = m_sub / M``, ``m_min / M <= mu <= sub_max``),
take ``SHMR(m_sub)`` with the same environment term and scatter, and sit on random member
particles of their host. Halo masses are M200c (:mod:`dm2gal.sim.so`). Masses in Msun/h,
lengths Mpc/h, velocities km/s (peculiar): a central moves with its halo (the mean of its member
particles' velocities), a satellite with the member particle it sits on.

The gravity-only run's halos, their member particles and environment come in as one
:class:`Hosts`. The oracle (:func:`oracle_mean`) is the model's expectation given the
gravity-only run: the stellar mass each halo centre and each member particle receives on
average over the scatter, the satellite counts, their masses and their positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, stats

from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog
from dm2gal.sim.ics import wavenumbers


@dataclass(frozen=True)
class GalaxyModel:
    """Parameters of the galaxy model (Moster+13 z=0 values by default)."""

    log_m1: float = 11.590  # characteristic halo mass, log10 Msun
    norm: float = 0.0351
    beta: float = 1.376
    gamma: float = 0.608
    scatter_dex: float = 0.15
    env_dex: float = 0.15  # dex of log10 M* per env_std of environment at fixed halo mass
    env_radius: float = 2.0  # Mpc/h
    # log10(1 + delta) at env_radius around a halo of log10 M200c = 12.5 (M in Msun/h), its slope
    # in log10 M and scatter at fixed mass: the mean of fits to the default mock (128^3 particles,
    # 75 Mpc/h; seeds 42 and 1000-1004 gave 0.444-0.488, 0.201-0.223 and 0.329-0.381)
    env_pivot: float = 0.465
    env_slope: float = 0.21
    env_std: float = 0.345
    sub_norm: float = 0.05
    sub_slope: float = 0.9
    sub_max: float = 0.1

    def __post_init__(self) -> None:
        for key in ("norm", "beta", "gamma", "env_radius", "env_std", "sub_slope"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("scatter_dex", "env_dex", "sub_norm"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0 < self.sub_max <= 1:
            raise ValueError(f"sub_max must be in (0, 1], got {self.sub_max}")


@dataclass(frozen=True)
class Hosts:
    """The gravity-only halos the galaxy model populates, with the particles they are made of.

    Attributes:
        pos: ``(n_h, 3)`` halo centres, Mpc/h.
        mass: ``(n_h,)`` halo masses (M200c), Msun/h.
        members: member particle indices of each halo (``n_h`` arrays).
        particle_pos: ``(n_p, 3)`` particle positions, Mpc/h.
        env: ``(n_h,)`` environment of each halo relative to its typical value at the halo's
            mass, in units of its scatter (:func:`environment_residual`).
        particle_vel: ``(n_p, 3)`` particle peculiar velocities, km/s (None: the run has none,
            the galaxies' velocities are NaN).
    """

    pos: np.ndarray
    mass: np.ndarray
    members: list[np.ndarray]
    particle_pos: np.ndarray
    env: np.ndarray
    particle_vel: np.ndarray | None = None

    def __post_init__(self) -> None:
        sizes = {key: len(getattr(self, key)) for key in ("pos", "mass", "members", "env")}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"Hosts: one entry per halo expected, got lengths {sizes}")

    def __len__(self) -> int:
        return len(self.mass)

    def velocities(self) -> np.ndarray:
        """``(n_h, 3)`` halo velocities, km/s: the mean of each halo's member particles'
        (NaN without particle velocities)."""
        if self.particle_vel is None:
            return np.full((len(self), 3), np.nan)
        count = np.array([len(m) for m in self.members], dtype=np.int64)
        index = np.concatenate(self.members) if self.members else np.zeros(0, dtype=np.int64)
        owner = np.repeat(np.arange(len(self)), count)
        total = [np.bincount(owner, self.particle_vel[index, ax], len(self)) for ax in range(3)]
        return np.stack(total, axis=1) / np.maximum(count, 1)[:, None]

    def particle_velocities(self, index: np.ndarray) -> np.ndarray:
        """``(len(index), 3)`` velocities of the particles ``index``, km/s (NaN without)."""
        if self.particle_vel is None:
            return np.full((len(index), 3), np.nan)
        return self.particle_vel[index]


def moster13(mass: np.ndarray, h: float, model: GalaxyModel) -> np.ndarray:
    """Mean stellar mass (Msun/h) of halos of ``mass`` Msun/h (Moster+13 in Msun, h-converted)."""
    m = np.asarray(mass, dtype=float) / h
    x = m / 10.0**model.log_m1
    mstar = 2.0 * model.norm * m / (x**-model.beta + x**model.gamma)
    return mstar * h


def satellite_rate(halo_mass: np.ndarray, min_sub_mass: float, model: GalaxyModel) -> np.ndarray:
    """Poisson mean of the satellite count: ``int dN/dln(mu)`` over ``[m_min / M, sub_max]``."""
    mu_min = min_sub_mass / np.maximum(np.asarray(halo_mass, dtype=float), 1e-300)
    a = model.sub_slope
    return np.where(
        mu_min < model.sub_max, model.sub_norm / a * (mu_min**-a - model.sub_max**-a), 0.0
    )


def lognormal_boost(scatter_dex: float) -> float:
    """``E[10^N(0, s)] = exp((s ln 10)^2 / 2)``: the mean of the scatter factor."""
    return float(np.exp(0.5 * (scatter_dex * np.log(10.0)) ** 2))


def capped_poisson_mean(rate: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """``E[min(N, m)]`` for ``N ~ Poisson(rate)``, exactly: ``rate F(m - 2) + m (1 - F(m - 1))``.

    (``sum_{k<m} k p_k = rate P(N <= m - 2)``.) The galaxy model caps a host's satellites at its
    member count ``m``, so this is the expected satellite count.
    """
    rate, cap = np.asarray(rate, dtype=float), np.asarray(cap, dtype=float)
    return rate * stats.poisson.cdf(cap - 2, rate) + cap * stats.poisson.sf(cap - 1, rate)


def mean_satellite_shmr(
    halo_mass: np.ndarray, min_sub_mass: float, h: float, model: GalaxyModel, nodes: int = 96
) -> np.ndarray:
    """``E[SHMR(mu M)]`` (Msun/h) over ``dN/dln(mu) ~ mu^-sub_slope`` on ``[m_min/M, sub_max]``.

    Gauss-Legendre in ``ln(mu)`` with ``nodes`` points (the integrand is smooth in ``ln mu``;
    96 points reach ~1e-12 relative over the ranges of a mock). Zero where no satellite can
    form (``m_min / M >= sub_max``).
    """
    mass = np.asarray(halo_mass, dtype=float)
    a = model.sub_slope
    mu_min = np.minimum(min_sub_mass / np.maximum(mass, 1e-300), model.sub_max)
    x, w = np.polynomial.legendre.leggauss(nodes)
    lo, hi = np.log(mu_min)[:, None], np.log(model.sub_max)
    ln_mu = lo + (hi - lo) * (x + 1.0) / 2.0
    density = np.exp(-a * ln_mu) * w * (hi - lo) / 2.0  # mu^-a dln(mu), unnormalised
    norm = density.sum(axis=1)
    shmr = moster13(np.exp(ln_mu) * mass[:, None], h, model)
    safe = np.where(norm > 0, norm, 1.0)
    return np.where(norm > 0, (shmr * density).sum(axis=1) / safe, 0.0)


def smoothed_density(field: np.ndarray, box: float, radius: float) -> np.ndarray:
    """``1 + delta`` of a mass grid, Gaussian-smoothed on ``radius`` Mpc/h (float32, floored at
    1e-3 so its log is finite)."""
    n = field.shape[0]
    delta_k = fft.rfftn(field / field.mean(), workers=-1)
    kx, ky, kz = wavenumbers(n, box)
    delta_k *= np.exp(-0.5 * (kx**2 + ky**2 + kz**2) * radius**2)
    smooth = np.ascontiguousarray(fft.irfftn(delta_k, s=field.shape, workers=-1), dtype=np.float32)
    np.maximum(smooth, 1e-3, out=smooth)
    return smooth


def log_density_at(smooth: np.ndarray, box: float, pos: np.ndarray) -> np.ndarray:
    """``log10`` of a :func:`smoothed_density` grid at ``pos`` (Mpc/h, Pylians CIC)."""
    import MAS_library as masl  # lazy: GPU machines run without Pylians

    values = np.zeros(len(pos), dtype=np.float32)
    pos32 = np.mod(pos, box).astype(np.float32)
    pos32[pos32 >= box] = 0.0
    masl.CIC_interp(smooth, float(box), pos32, values)
    return np.log10(values.astype(float))


def smoothed_log_density(
    field: np.ndarray, box: float, radius: float, pos: np.ndarray
) -> np.ndarray:
    """``log10(1 + delta)`` of a mass grid, Gaussian-smoothed on ``radius`` Mpc/h, at ``pos``."""
    return log_density_at(smoothed_density(field, box, radius), box, pos)


def environment_residual(
    log_mass: np.ndarray, log_env: np.ndarray, model: GalaxyModel
) -> np.ndarray:
    """Each halo's environment ``log_env`` (``log10(1 + delta)``) relative to the model's typical
    value at its mass ``log_mass`` (log10 M200c, M in Msun/h), in units of ``model.env_std``."""
    typical = model.env_pivot + model.env_slope * (np.asarray(log_mass) - 12.5)
    return (np.asarray(log_env) - typical) / model.env_std


def populate(
    hosts: Hosts,
    min_sub_mass: float,
    h: float,
    model: GalaxyModel,
    rng: np.random.Generator,
) -> tuple[HaloCatalog, GalaxyCatalog]:
    """Place centrals and satellites in halos; return the halo and galaxy catalogues.

    Args:
        hosts: the halos, their member particles and their environment.
        min_sub_mass: smallest subhalo mass hosting a satellite, Msun/h.
        h: dimensionless Hubble constant (Moster+13 is in Msun).
        model: galaxy model parameters.
        rng: random generator (the only source of randomness).
    """
    n_h = len(hosts)
    mu_min = min_sub_mass / np.maximum(hosts.mass, 1e-300)
    a = model.sub_slope
    n_sat = np.minimum(
        rng.poisson(satellite_rate(hosts.mass, min_sub_mass, model)),
        [len(m) for m in hosts.members],
    )
    host_sat = np.repeat(np.arange(n_h), n_sat)
    # inverse CDF of dN/dmu ~ mu^(-a-1) on [mu_min, sub_max]
    u = rng.random(len(host_sat))
    lo, hi = mu_min[host_sat] ** -a, model.sub_max**-a
    mu = (lo - u * (lo - hi)) ** (-1.0 / a)
    sat_particle = np.empty(len(host_sat), dtype=np.int64)
    start = 0
    for i in np.flatnonzero(n_sat):
        chosen = rng.choice(hosts.members[i], size=n_sat[i], replace=False)
        sat_particle[start : start + n_sat[i]] = chosen
        start += n_sat[i]
    sat_pos = hosts.particle_pos[sat_particle]

    host = np.concatenate([np.arange(n_h), host_sat])
    base_mass = np.concatenate([hosts.mass, mu * hosts.mass[host_sat]])
    log_mstar = (
        np.log10(moster13(base_mass, h, model))
        + model.env_dex * hosts.env[host]
        + rng.normal(0.0, model.scatter_dex, len(host))
    )
    halo_vel = hosts.velocities()
    halos = HaloCatalog(
        pos=np.asarray(hosts.pos, dtype=float),
        mass=np.asarray(hosts.mass),
        n_sub=1 + n_sat,
        vel=halo_vel,
    )
    galaxies = GalaxyCatalog(
        pos=np.concatenate([hosts.pos, sat_pos]),
        mstar=10.0**log_mstar,
        host=host,
        central=np.arange(len(host)) < n_h,
        host_mass=hosts.mass[host],
        vel=np.concatenate([halo_vel, hosts.particle_velocities(sat_particle)]),
    )
    return halos, galaxies


def oracle_mean(
    hosts: Hosts,
    min_sub_mass: float,
    h: float,
    model: GalaxyModel,
) -> tuple[np.ndarray, np.ndarray]:
    """The stellar mass :func:`populate` puts, on average, at each possible site (same inputs).

    A central contributes ``SHMR(M) 10^(env_dex e) exp((s ln 10)^2 / 2)`` at its halo centre.
    A host's satellites contribute ``E[min(N, m)] E[SHMR(mu M)] 10^(env_dex e) exp(...)``,
    spread evenly over its ``m`` member particles (a satellite sits on a uniformly chosen member,
    without replacement, so each member carries ``E[min(N, m)] / m`` satellites on average; the
    cap at ``m`` is taken into account exactly by :func:`capped_poisson_mean`).

    Returns ``(pos (n, 3) Mpc/h, mass (n,) Msun/h)``: halo centres, then member particles.
    """
    halo_mass = np.asarray(hosts.mass, dtype=float)
    count = np.array([len(m) for m in hosts.members])
    boost = lognormal_boost(model.scatter_dex) * 10.0 ** (model.env_dex * np.asarray(hosts.env))
    central = moster13(halo_mass, h, model) * boost
    n_sat = capped_poisson_mean(satellite_rate(halo_mass, min_sub_mass, model), count)
    sat_total = n_sat * mean_satellite_shmr(halo_mass, min_sub_mass, h, model) * boost
    per_member = np.repeat(sat_total / np.maximum(count, 1), count)
    index = np.concatenate(hosts.members) if hosts.members else np.zeros(0, dtype=int)
    pos = np.concatenate([np.asarray(hosts.pos, dtype=float), hosts.particle_pos[index]])
    return pos, np.concatenate([central, per_member])
