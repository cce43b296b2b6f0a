"""The embedded mock universe: a paired gravity-only + galaxies box, cached on disk.

Pipeline: Gaussian ICs (colossus linear P(k), optionally fixed-amplitude / phase-flipped) ->
2LPT to ``z_init`` -> FastPM particle-mesh steps to z=0 on a force mesh ``pm_factor`` times finer
than the particle lattice, finished by PGD (:mod:`dm2gal.sim.pm`) -> periodic FoF halos
(``linking_b`` times the mean spacing) with densest-particle centres and M200c masses
(:mod:`dm2gal.sim.so`) -> galaxies (Moster+13 SHMR with an environment term, satellites on member
particles) -> CIC fields with Pylians: ``dm``, ``subhalo`` (each halo's mass at its centre) and
``stellar``, plus ``catalogs.h5`` (halos and galaxies with peculiar velocities in km/s: the PM
run's particle velocities at z=0, a halo's the mean of its members', a central its halo's, a
satellite its particle's; PGD moves positions only, it sharpens halos that a few-step run
leaves puffy and is no part of the dynamics, so velocities are the PM run's). Beside them, the
oracle of the galaxy model on the same halos:
``oracle_mean`` (the expected stellar field given the gravity-only run,
:func:`dm2gal.sim.galaxies.oracle_mean`; no deterministic map from the DM run has a higher
expected r(k) with ``stellar``) and ``oracle_draw`` (an independent draw of the scatter and the
satellites from a third seed stream: what a perfect stochastic model scores). Everything lands in
``cache_dir / <config hash>`` through a temporary directory renamed when complete.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft

from dm2gal.errors import ConfigError, integer_option
from dm2gal.io.catalog import (
    CATALOGS_FILE,
    GalaxyCatalog,
    HaloCatalog,
    load_catalogs,
    save_catalogs,
)
from dm2gal.io.paint import paint
from dm2gal.io.parameters import parameter_attrs
from dm2gal.io.sources import FIELDS, CachedSource
from dm2gal.io.store import FieldStore, StoreError, config_hash, file_hash
from dm2gal.sim.cosmology import RHO_CRIT, Cosmology
from dm2gal.sim.fof import friends_of_friends
from dm2gal.sim.galaxies import (
    GalaxyModel,
    Hosts,
    environment_residual,
    oracle_mean,
    populate,
    smoothed_log_density,
)
from dm2gal.sim.ics import linear_delta_k
from dm2gal.sim.lpt import lattice, lpt_displacements
from dm2gal.sim.pm import ParticleMesh, evolve, peculiar_velocity, pgd_parameters, pgd_shift
from dm2gal.sim.so import m200c, spherical_overdensity

#: ``attrs.source`` of a mock universe's store (what readers of the store recognise it by)
MOCK_SOURCE = "mock"
log = logging.getLogger(__name__)

MOCK_VERSION = 4  # bump when the generated data change for the same configuration (4: velocities)
ORACLE_FIELDS = ("oracle_mean", "oracle_draw")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"MockUniverse: {key} must be true or false, got {value!r}")
    return bool(value)


def _positive_float(key: str, value: Any) -> float:
    if not (_is_number(value) and np.isfinite(value) and value > 0):
        raise ConfigError(f"MockUniverse: {key} must be a finite number > 0, got {value!r}")
    return float(value)


class MockUniverse(CachedSource):
    """A seeded mock universe of side ``box`` Mpc/h with ``particles^3`` DM particles.

    Args:
        box: box side, Mpc/h.
        particles: particles per side.
        grid: side of the output CIC grids.
        seed: seed of the initial conditions and of the galaxy model.
        cache_dir: directory holding one sub-directory per configuration.
        z_init: redshift of the 2LPT initial conditions.
        steps: number of PM steps (linear in the scale factor) to z=0.
        pm_factor: force-mesh cells per particle spacing (per side).
        pgd: finish the run with the PGD correction calibrated for ``steps`` and ``pm_factor``
            (5-40 steps on a 2x mesh, 40 on a 4x mesh; see :mod:`dm2gal.sim.pm`).
        fixed_amplitude: fixed-amplitude ICs (Angulo & Pontzen 2016).
        phase_flip: negated ICs (the pair partner of the same seed).
        linking_b: FoF linking length in units of the mean particle spacing.
        min_halo_particles: smallest FoF group kept as a halo.
        cosmology: cosmological parameters (keys of :class:`Cosmology`).
        galaxies: galaxy-model parameters (keys of :class:`GalaxyModel`).
        parameter_names: the keys of ``cosmology`` / ``galaxies`` that place this universe in a
            parameter space (a Latin hypercube's dimensions): its store records their values
            (:mod:`dm2gal.io.parameters`); empty: a single universe, no parameters recorded.
    """

    fields = FIELDS + ORACLE_FIELDS

    def __init__(
        self,
        box: float = 75.0,
        particles: int = 128,
        grid: int = 128,
        seed: int = 42,
        cache_dir: str | Path = "data/mock",
        *,
        z_init: float = 9.0,
        steps: int = 20,
        pm_factor: int = 2,
        pgd: bool = True,
        fixed_amplitude: bool = False,
        phase_flip: bool = False,
        linking_b: float = 0.2,
        min_halo_particles: int = 20,
        cosmology: dict[str, float] | None = None,
        galaxies: dict[str, float] | None = None,
        parameter_names: Sequence[str] = (),
    ):
        self.box = _positive_float("box", box)
        self.particles = integer_option(particles, "data.source.particles", 2)
        self.grid = integer_option(grid, "data.source.grid", 2)
        self.seed = integer_option(seed, "data.source.seed", 0)
        self.cache_dir = Path(cache_dir)
        self.z_init = _positive_float("z_init", z_init)
        self.steps = integer_option(steps, "data.source.steps", 1)
        self.pm_factor = integer_option(pm_factor, "data.source.pm_factor", 1)
        self.pgd = _flag("pgd", pgd)
        self.fixed_amplitude = _flag("fixed_amplitude", fixed_amplitude)
        self.phase_flip = _flag("phase_flip", phase_flip)
        if self.pgd:
            try:
                pgd_parameters(self.steps, self.particles, self.box, self.pm_factor)
            except ValueError as err:
                raise ConfigError(
                    f"data.source.steps / data.source.pm_factor: {err}; or set "
                    "data.source.pgd=false"
                ) from err
        self.linking_b = _positive_float("linking_b", linking_b)
        if self.linking_b >= 1:
            raise ConfigError(f"MockUniverse: linking_b must be < 1, got {linking_b!r}")
        self.min_halo_particles = integer_option(
            min_halo_particles, "data.source.min_halo_particles", 2
        )
        self.cosmo = self._build("cosmology", Cosmology, cosmology)
        self.galaxy_model = self._build("galaxies", GalaxyModel, galaxies)
        known = [f.name for f in fields(Cosmology) + fields(GalaxyModel)]
        unknown = [name for name in parameter_names if name not in known]
        if unknown or len(set(parameter_names)) != len(parameter_names):
            raise ConfigError(
                f"MockUniverse: parameter_names {list(parameter_names)} must be distinct keys of "
                f"the cosmology or the galaxy model ({known}); unknown: {unknown}"
            )
        self.parameter_names = tuple(parameter_names)

    @staticmethod
    def _build(key: str, cls: type, params: dict[str, float] | None) -> Any:
        try:
            return cls(**(params or {}))
        except TypeError as err:
            raise ConfigError(f"MockUniverse: bad {key} parameters {params!r}: {err}") from err
        except ValueError as err:
            raise ConfigError(f"MockUniverse: {key}.{err}") from err

    # -- identity -----------------------------------------------------------------------------
    @property
    def parameters(self) -> dict[str, float]:
        """The values of :attr:`parameter_names`, in order (cosmology, else galaxy model)."""
        owner = {f.name: self.cosmo for f in fields(Cosmology)}
        return {
            name: float(getattr(owner.get(name, self.galaxy_model), name))
            for name in self.parameter_names
        }

    @property
    def config(self) -> dict[str, Any]:
        """The full configuration that determines the generated data (and the parameters its
        store records, when there are any)."""
        named = {"parameter_names": list(self.parameter_names)} if self.parameter_names else {}
        return named | {
            "version": MOCK_VERSION,
            "box": self.box,
            "particles": self.particles,
            "grid": self.grid,
            "seed": self.seed,
            "z_init": self.z_init,
            "steps": self.steps,
            "pm_factor": self.pm_factor,
            "pgd": self.pgd,
            "fixed_amplitude": self.fixed_amplitude,
            "phase_flip": self.phase_flip,
            "linking_b": self.linking_b,
            "min_halo_particles": self.min_halo_particles,
            "cosmology": asdict(self.cosmo),
            "galaxies": asdict(self.galaxy_model),
        }

    @property
    def hash(self) -> str:
        return config_hash(self.config)

    @property
    def store_dir(self) -> Path:
        return self.cache_dir / self.hash

    def realisation(self, seed: int) -> MockUniverse:
        """This universe's settings with another ``seed``: another realisation, same cache dir."""
        other = copy.copy(self)
        other.seed = integer_option(seed, "data.source.seed", 0)
        return other

    @property
    def particle_mass(self) -> float:
        """Mass of one DM particle, Msun/h."""
        return self.cosmo.rho_m * (self.box / self.particles) ** 3

    def _delta_k(self) -> np.ndarray:
        """``rfftn`` of the linear overdensity at z=0 on the particle lattice."""
        return linear_delta_k(
            self.particles,
            self.box,
            self._seeds()[0],
            self.cosmo,
            fixed_amplitude=self.fixed_amplitude,
            phase_flip=self.phase_flip,
        )

    def _seeds(self) -> tuple[np.random.SeedSequence, ...]:
        """Seed streams: initial conditions, the galaxies, the oracle's independent draw."""
        ics, galaxies, oracle = np.random.SeedSequence(self.seed).spawn(3)
        return ics, galaxies, oracle

    # -- physics ------------------------------------------------------------------------------
    def linear_density(self) -> np.ndarray:
        """Linear overdensity at z=0 on the ``particles^3`` lattice (the ICs of this seed)."""
        delta_k = self._delta_k()
        return fft.irfftn(delta_k, s=(self.particles,) * 3, workers=-1).astype(np.float32)

    def simulate(self) -> np.ndarray:
        """Run the gravity-only simulation; return z=0 particle positions ``(n, 3)``, Mpc/h."""
        return self.phase_space()[0]

    def phase_space(self) -> tuple[np.ndarray, np.ndarray]:
        """Run the gravity-only simulation; return z=0 particle positions ``(n, 3)`` (Mpc/h,
        PGD-corrected) and peculiar velocities ``(n, 3)`` (km/s, the PM run's)."""
        cosmo, n = self.cosmo, self.particles
        a0 = 1.0 / (1.0 + self.z_init)
        delta_k = self._delta_k()
        psi1, psi2 = lpt_displacements(delta_k, self.box)
        del delta_k
        d1 = cosmo.growth(a0)
        d2 = -3.0 / 7.0 * d1**2
        pos = lattice(n, self.box) + d1 * psi1 + d2 * psi2
        mom = cosmo.momentum_factor(a0) * psi1
        mom += a0**2 * float(cosmo.E(a0)) * cosmo.growth_rate2(a0) * d2 * psi2
        del psi1, psi2
        log.info("2LPT initial conditions at z=%.1f for %d^3 particles", self.z_init, n)
        solver = ParticleMesh(self.pm_factor * n, self.box, cosmo.Om0)
        pos, mom = evolve(pos, mom, np.linspace(a0, 1.0, self.steps + 1), cosmo, solver)
        if self.pgd:
            pos = pgd_shift(pos, solver, *pgd_parameters(self.steps, n, self.box, self.pm_factor))
        return pos, peculiar_velocity(mom, 1.0)

    def _generate(self, root: Path) -> None:
        """Simulate, find halos, paint galaxies and write the store into ``root``."""
        t0 = time.perf_counter()
        pos, vel = self.phase_space()
        log.info("gravity-only run done in %.1f s", time.perf_counter() - t0)
        dm = paint(pos, self.particle_mass, self.grid, self.box)

        spacing = self.box / self.particles
        groups = friends_of_friends(
            pos, self.box, self.linking_b * spacing, min_members=self.min_halo_particles
        )
        so = spherical_overdensity(
            pos, self.box, groups.labels, groups.size, self.particle_mass, 200.0 * RHO_CRIT
        )
        # M200c about the densest member as TNG's Group_M_Crit200, where 3 force cells resolve it
        cell = self.box / (self.pm_factor * self.particles)
        halo_mass = m200c(so, groups.size * self.particle_mass, self.cosmo, 3.0 * cell)
        log.info("FoF: %d halos with >= %d particles", len(groups), self.min_halo_particles)

        model = self.galaxy_model
        log_env = smoothed_log_density(dm, self.box, model.env_radius, so.centre)
        env = environment_residual(np.log10(halo_mass), log_env, model)
        hosts = Hosts(so.centre, halo_mass, groups.members(), pos, env, particle_vel=vel)
        physics = {
            "min_sub_mass": self.min_halo_particles * self.particle_mass,
            "h": self.cosmo.h,
            "model": model,
        }
        halos, galaxies = populate(hosts, **physics, rng=np.random.default_rng(self._seeds()[1]))
        log.info("galaxies: %d (%d centrals)", len(galaxies), int(galaxies.central.sum()))
        _, draw = populate(hosts, **physics, rng=np.random.default_rng(self._seeds()[2]))
        mean_pos, mean_mass = oracle_mean(hosts, **physics)

        save_catalogs(root / CATALOGS_FILE, halos, galaxies, mass_definition="M200c")
        store = FieldStore(root)
        store.init(
            self.box,
            self.grid,
            source=MOCK_SOURCE,
            config=self.config,
            config_hash=self.hash,
            seed=self.seed,
            catalogs_hash=file_hash(root / CATALOGS_FILE),
            particle_mass=self.particle_mass,
            **parameter_attrs(self.parameters),
        )
        store.write("dm", dm, units="Msun/h per voxel", mas="CIC")
        subhalo = paint(halos.pos, halos.mass, self.grid, self.box)
        store.write("subhalo", subhalo, units="Msun/h per voxel", mas="CIC")
        stellar = paint(galaxies.pos, galaxies.mstar, self.grid, self.box)
        store.write("stellar", stellar, units="Msun/h per voxel", mas="CIC")
        oracles = {
            "oracle_mean": paint(mean_pos, mean_mass, self.grid, self.box),
            "oracle_draw": paint(draw.pos, draw.mstar, self.grid, self.box),
        }
        for name, field in oracles.items():
            store.write(name, field, units="Msun/h per voxel", mas="CIC")
        log.info("mock universe generated in %.1f s", time.perf_counter() - t0)

    # -- cache --------------------------------------------------------------------------------
    def cache_problem(self, root: Path | None = None) -> str | None:
        """Why the store at ``root`` (default: ``store_dir``) cannot be used; None if it can."""
        root = self.store_dir if root is None else Path(root)
        store = FieldStore(root)
        try:
            meta = store.meta()
        except StoreError as err:
            return str(err)
        stored = meta.get("attrs", {}).get("config_hash")
        if stored != self.hash:
            return f"config hash {stored!r} in {store.meta_path} != expected {self.hash!r}"
        missing = [name for name in FIELDS + ORACLE_FIELDS if name not in meta["fields"]]
        if missing:
            return f"fields {missing} missing"
        bad = store.verify(list(FIELDS + ORACLE_FIELDS))
        if bad:
            return f"fields {bad} missing on disk or failing their content hash"
        catalogs = root / CATALOGS_FILE
        if not catalogs.is_file():
            return f"{catalogs} missing"
        if file_hash(catalogs) != meta["attrs"].get("catalogs_hash"):
            return f"{catalogs} fails its content hash"
        return None

    def fingerprint(self) -> dict[str, Any]:
        return self.config

    def is_built(self, fingerprint: dict[str, Any], root: Path) -> bool:
        """True if ``root`` holds this mock intact (see :meth:`cache_problem`); a broken cache
        is reported before it is regenerated."""
        problem = self.cache_problem(root)
        if problem is not None and root.exists():
            warnings.warn(
                f"mock cache {root} is unusable ({problem}); regenerating it", stacklevel=3
            )
        return problem is None

    def write(self, store: FieldStore, fingerprint: dict[str, Any]) -> None:
        log.info("generating mock universe for %s", self.store_dir)
        self._generate(store.root)

    def catalogs(self) -> tuple[HaloCatalog, GalaxyCatalog]:
        """Halo and galaxy catalogues of this mock (building it if needed)."""
        self.build()
        return load_catalogs(self.store_dir / CATALOGS_FILE)
