"""Gravity-only sources: a gravity-only run's own files -> a store with the input fields.

Each source reads one gravity-only run (no hydro twin) and builds the fields ``dm`` and
``subhalo`` the way a trained run's recipe says (:mod:`dm2gal.io.recipe`: mass assignment,
(sub)halo mass column and minimum mass), plus ``tracers.h5`` (the (sub)halos with velocities,
where painted galaxies go). Before any particle is read, :meth:`GravitySource.info` gives the
run's box, redshift, cosmology, particle mass and halo-catalogue kind from the headers, so the
grid can be chosen and the run compared with the network's training run
(:mod:`dm2gal.paint.trust`).

Sources (config group ``sim/``):

- :class:`GadgetSource` (``sim=tng``, ``sim=gadget``): GADGET / AREPO / IllustrisTNG HDF5
  snapshots, single- or multi-file; halos from the run's FoF/SUBFIND catalogue, or, where there
  is none, from the project's own FoF + M200c (:mod:`dm2gal.sim.fof`, :mod:`dm2gal.sim.so`), as
  the mock universe finds its halos;
- :class:`AbacusSource` (``sim=abacus``): AbacusSummit outputs (particle slices and CompaSO
  halos) through ``abacusutils``;
- :class:`MockSource` (``sim=mock``): a mock universe's store, its gravity-only files only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dm2gal import __version__
from dm2gal.infer.recipe import mock_sim
from dm2gal.io.abacus import AbacusRun
from dm2gal.io.catalog import CATALOGS_FILE, load_catalogs
from dm2gal.io.gadget import GroupCatalog, SimFileError, Snapshot, open_hdf5
from dm2gal.io.gadget import read_dataset as read_hdf5
from dm2gal.io.gravity_fields import Tracers, paint_subhalo, subfind_tracers
from dm2gal.io.paint import PAINT_SCHEMES, Chunk, paint_field
from dm2gal.io.recipe import SimInfo
from dm2gal.io.sources import UNITS, CachedSource, SourceError, _stamp, check_grid
from dm2gal.io.store import FieldStore, config_hash
from dm2gal.sim.cosmology import RHO_CRIT, Cosmology
from dm2gal.sim.fof import friends_of_friends
from dm2gal.sim.mock import MOCK_SOURCE
from dm2gal.sim.so import m200c, spherical_overdensity

#: the fields of a gravity-only store
GRAVITY_FIELDS = ("dm", "subhalo")
HALO_MODES = ("auto", "catalog", "own_fof")


class GravitySource(CachedSource):
    """Base of the gravity-only sources.

    Args:
        store_dir: where :meth:`build` puts the field store (painting writes into its output).
        grid: grid side ``N`` (None until the painting command sets it from the voxel size).
        mas: mass-assignment scheme (the recipe's).
        subhalo_mass: (sub)halo mass definition painted into ``subhalo`` (the recipe's; what
            each source can give is in its docstring).
        subhalo_min_mass: smallest (sub)halo mass painted, Msun/h.
        progress: progress bars.
    """

    fields = GRAVITY_FIELDS

    def __init__(
        self,
        store_dir: str | Path | None = None,
        grid: int | None = None,
        mas: str = "CIC",
        subhalo_mass: str = "SubhaloMass",
        subhalo_min_mass: float = 0.0,
        progress: bool = True,
    ):
        self.store_dir = None if store_dir is None else Path(store_dir)
        self.grid = None if grid is None else check_grid(grid)
        if mas not in PAINT_SCHEMES:
            raise SourceError(f"option 'mas' must be one of {PAINT_SCHEMES}, got {mas!r}")
        self.mas, self.subhalo_mass = mas, str(subhalo_mass)
        self.subhalo_min_mass, self.progress = float(subhalo_min_mass), bool(progress)

    def parameter_store(self) -> FieldStore | None:
        """The store whose metadata records the universe's parameters (a conditioned network
        is bound to them unless the command line gives them), or None: this source records
        none."""
        return None

    # -- what each source provides ------------------------------------------------------------
    def info(self) -> SimInfo:
        """The run's box, redshift, cosmology, particle mass and halo-catalogue kind."""
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The files the fields are built from (their sizes and times fingerprint the store)."""
        raise NotImplementedError

    def dm_chunks(self) -> tuple[Iterable[Chunk], int | None, str]:
        """``(pos, mass)`` chunks of every DM particle, their number, and their origin."""
        raise NotImplementedError

    def tracers(self) -> Tracers:
        """Every (sub)halo of the run with the ``subhalo_mass`` definition."""
        raise NotImplementedError

    def subhalo_definition(self) -> str:
        """The mass definition :meth:`tracers` gives (may differ from the recipe's)."""
        return self.subhalo_mass

    # -- shared -------------------------------------------------------------------------------
    def with_grid(self, grid: int, store_dir: str | Path | None = None) -> GravitySource:
        """This source on a ``grid^3`` mesh (a copy), built into ``store_dir`` if given."""
        other = copy.copy(self)
        other.grid = check_grid(grid)
        if store_dir is not None:
            other.store_dir = Path(store_dir)
        return other

    def fingerprint(self) -> dict[str, Any]:
        if self.grid is None:
            raise SourceError(f"{type(self).__name__}: option 'grid' is not set")
        return {
            "source": type(self).__name__,
            "files": _stamp(self.files()),
            "grid": self.grid,
            "mas": self.mas,
            "subhalo": [self.subhalo_definition(), self.subhalo_min_mass],
            "code_version": __version__,
        }

    def write(self, store: FieldStore, fingerprint: dict[str, Any]) -> None:
        info = self.info()
        store.init(
            info.box,
            self.grid,
            source=fingerprint["source"],
            files=[f[0] for f in fingerprint["files"]],
            sim=info.__dict__,
            mas=self.mas,
            subhalo_mass=self.subhalo_definition(),
            subhalo_min_mass=self.subhalo_min_mass,
            units=UNITS,
            fingerprint=config_hash(fingerprint),
        )
        self.paint_dm(store)
        definition = self.subhalo_definition()
        paint_subhalo(
            store,
            self.tracers().select(self.subhalo_min_mass),
            self.mas,
            f"{info.halo_catalog} {definition} >= {self.subhalo_min_mass}",
        )

    def paint_dm(self, store: FieldStore) -> None:
        """Paint the ``dm`` field of ``store`` from :meth:`dm_chunks`."""
        chunks, n_chunks, origin = self.dm_chunks()
        paint_field(store, "dm", chunks, self.mas, n_chunks, self.progress, origin=origin)


def _cosmology(info: SimInfo) -> Cosmology:
    """The run's Om0 and H0 (other parameters: the defaults; they enter only the NFW
    concentration of the FoF -> M200c conversion)."""
    return Cosmology(Om0=info.omega_m, H0=100.0 * info.h)


class GadgetSource(GravitySource):
    """A GADGET / AREPO / IllustrisTNG gravity-only run (HDF5, single- or multi-file).

    Args:
        root: folder of the run (or of several runs).
        snapshot: snapshot number.
        run, output: sub-folders: the snapshot files are in ``root/run/output`` (TNG:
            ``root/TNG100-1-Dark/output``; empty strings for a plain output folder).
        file: one snapshot file of any name in that folder, instead of ``snap_NNN``
            (``snapshot`` is then unused; halos from the own FoF).
        halos: ``catalog`` (the run's ``fof_subhalo_tab``), ``own_fof`` (the project's FoF +
            M200c on the particles) or ``auto`` (the catalogue when there is one).
        linking_b, min_halo_particles, min_radius: own FoF: linking length in mean particle
            spacings, smallest group, and the radius (Mpc/h) below which M200c is converted
            from the FoF mass instead of grown (:func:`dm2gal.sim.so.m200c`; 0: always grown).
        chunk_rows: particles read per chunk.
        Other arguments: see :class:`GravitySource`. ``subhalo_mass`` is a catalogue column
        (``SubhaloMass``, ``SubhaloMassType[1]``: SUBFIND subhalos; ``Group_M_Crit200``,
        ``GroupMass``: FoF groups) or ``M200c`` (FoF groups' ``Group_M_Crit200`` from a
        catalogue; the own FoF gives ``M200c`` whatever is asked).
    """

    def __init__(
        self,
        root: str | Path,
        snapshot: int = 0,
        store_dir: str | Path | None = None,
        run: str = "",
        output: str = "",
        file: str | None = None,
        halos: str = "auto",
        linking_b: float = 0.2,
        min_halo_particles: int = 20,
        min_radius: float = 0.0,
        chunk_rows: int = 1 << 22,
        **options: Any,
    ):
        super().__init__(store_dir, **options)
        self.directory = Path(root) / run / output
        self.file = None if file is None else self.directory / file
        if self.file is not None and halos == "catalog":
            raise SourceError("option 'file' (one snapshot file) needs halos=own_fof or auto")
        self.snapshot = int(snapshot)
        if halos not in HALO_MODES:
            raise SourceError(f"option 'halos' must be one of {HALO_MODES}, got {halos!r}")
        self.halos, self.chunk_rows = halos, int(chunk_rows)
        self.linking_b, self.min_radius = float(linking_b), float(min_radius)
        self.min_halo_particles = int(min_halo_particles)
        if not 0 < self.linking_b < 1:
            raise SourceError(f"option 'linking_b' must be in (0, 1), got {linking_b!r}")

    def snap(self) -> Snapshot:
        if self.file is not None:
            return Snapshot([self.file], self.chunk_rows)
        return Snapshot.find(self.directory, self.snapshot, self.chunk_rows)

    def catalog(self) -> GroupCatalog | None:
        """The run's group catalogue, None for ``halos=own_fof`` (or ``auto`` without one)."""
        if self.halos == "own_fof" or (self.file is not None and self.halos == "auto"):
            return None
        try:
            return GroupCatalog.find(self.directory, self.snapshot)
        except SimFileError:
            if self.halos == "catalog":
                raise
            return None

    def info(self) -> SimInfo:
        snap = self.snap()
        cat = self.catalog()
        if cat is not None:
            keys = ("box", "redshift", "hubble", "omega0", "omega_lambda")
            snap.info.check_same(cat.info, keys, "gravity-only snapshot vs its catalogue")
        mass = float(snap.mass_table[1]) if len(snap.mass_table) > 1 else 0.0
        return SimInfo(
            box=snap.box,
            redshift=snap.info.redshift,
            omega_m=snap.info.omega0,
            h=snap.info.hubble,
            particle_mass=mass or None,
            halo_catalog="own_fof" if cat is None else self._catalog_kind(),
        )

    def _catalog_kind(self) -> str:
        return "fof" if self._column().startswith("Group") else "subfind"

    def _column(self) -> str:
        return "Group_M_Crit200" if self.subhalo_mass == "M200c" else self.subhalo_mass

    def subhalo_definition(self) -> str:
        return "M200c" if self.catalog() is None else self._column()

    def files(self) -> list[Path]:
        cat = self.catalog()
        return self.snap().files + ([] if cat is None else cat.files)

    def dm_chunks(self) -> tuple[Iterable[Chunk], int | None, str]:
        snap = self.snap()
        return ((c.pos, c.mass) for c in snap.particles(1)), snap.n_chunks(1), "PartType1"

    def tracers(self) -> Tracers:
        cat = self.catalog()
        if cat is not None:
            return subfind_tracers(cat, self._column())
        return self.own_fof()

    def particle_velocities(self, snap: Snapshot) -> np.ndarray:
        """Every DM particle's peculiar velocity, km/s (file values times sqrt(a)), in the
        order :meth:`Snapshot.particles` yields their positions."""
        parts = []
        for path in snap.files:
            with open_hdf5(path) as f:
                if "PartType1" in f:
                    parts.append(read_hdf5(f, "PartType1/Velocities").astype(np.float64))
        vel = np.concatenate(parts) if parts else np.zeros((0, 3))
        return vel * np.sqrt(1.0 / (1.0 + snap.info.redshift))

    def own_fof(self) -> Tracers:
        """FoF groups (``linking_b`` mean spacings, at least ``min_halo_particles``) with
        densest-member centres, M200c (grown, or converted from FoF below ``min_radius``) and
        members' mean velocity, as the mock universe finds its halos."""
        snap = self.snap()
        info = self.info()
        chunks = list(snap.particles(1))
        pos = np.concatenate([c.pos for c in chunks])
        masses = {float(c.mass) for c in chunks if np.ndim(c.mass) == 0}
        if len(masses) != 1 or any(np.ndim(c.mass) for c in chunks):
            raise SimFileError(
                f"{snap.files[0]}: the own FoF needs one DM particle mass (Header/MassTable[1])"
            )
        particle_mass = masses.pop()
        vel = self.particle_velocities(snap)
        if vel.shape != pos.shape:
            raise SimFileError(
                f"{snap.files[0]}: PartType1/Velocities has {vel.shape}, positions {pos.shape}"
            )
        spacing = snap.box / len(pos) ** (1 / 3)
        groups = friends_of_friends(
            pos, snap.box, self.linking_b * spacing, min_members=self.min_halo_particles
        )
        z = info.redshift
        cosmo = _cosmology(info)
        # 200 rho_crit(z) in comoving (Mpc/h)^3: rho_crit,0 E(z)^2 / (1 + z)^3
        density = 200.0 * RHO_CRIT * float(cosmo.E(1.0 / (1.0 + z))) ** 2 / (1.0 + z) ** 3
        labels, size = groups.labels, groups.size
        so = spherical_overdensity(pos, snap.box, labels, size, particle_mass, density)
        mass = m200c(so, groups.size * particle_mass, cosmo, self.min_radius)
        member = groups.labels >= 0
        mean_vel = np.stack(
            [
                np.bincount(groups.labels[member], vel[member, ax], len(groups)) / groups.size
                for ax in range(3)
            ],
            axis=1,
        )
        return Tracers(so.centre, mass, mean_vel, np.arange(len(groups), dtype=np.int64))


class MockSource(GravitySource):
    """A mock universe's gravity-only output: its ``dm`` field (copied) and its halos (FoF
    groups at their densest member with M200c and their members' mean velocity,
    ``catalogs.h5``), nothing of its galaxies. The grid is the mock's own (a mock written
    before it kept velocities gives NaN).

    Args:
        root: the mock's store directory (``<cache_dir>/<config hash>``).
        Other arguments: see :class:`GravitySource` (``subhalo_mass`` must be ``M200c``).
    """

    def __init__(self, root: str | Path, store_dir: str | Path | None = None, **options: Any):
        super().__init__(store_dir, **options)
        self.root = Path(root)

    def mock(self) -> FieldStore:
        store = FieldStore(self.root)
        meta = store.meta()
        if meta.get("attrs", {}).get("source") != MOCK_SOURCE:
            raise SourceError(f"{store.meta_path}: not a mock universe store (attrs.source)")
        return store

    def info(self) -> SimInfo:
        return mock_sim(self.mock())

    def subhalo_definition(self) -> str:
        return "M200c"

    def parameter_store(self) -> FieldStore:
        return self.mock()

    def files(self) -> list[Path]:
        store = self.mock()
        return [store.meta_path, store.path("dm"), self.root / CATALOGS_FILE]

    def paint_dm(self, store: FieldStore) -> None:
        """Copy the mock's ``dm`` field (painted by the mock with CIC on its own grid)."""
        mock = self.mock()
        if self.mas != "CIC" or store.grid != mock.grid:
            raise SourceError(
                f"{self.root}: the mock's dm field is CIC on {mock.grid}^3; cannot give "
                f"{self.mas} on {store.grid}^3"
            )
        store.write("dm", mock.read("dm", mmap=False), mas="CIC", origin=str(mock.path("dm")))

    def tracers(self) -> Tracers:
        halos, _ = load_catalogs(self.root / CATALOGS_FILE)
        return Tracers(halos.pos, halos.mass, halos.vel, np.arange(len(halos)))


class AbacusSource(GravitySource):
    """An Abacus / AbacusSummit run: every particle of the ``field`` and ``L0`` slices, and
    the CompaSO halos (``N`` times the particle mass at ``x_L2com``, with ``v_L2com``),
    through ``abacusutils`` (:mod:`dm2gal.io.abacus`).

    Args:
        root: the simulation folder (``.../AbacusSummit_base_c000_ph000`` or the test run
            ``Mini_N64_L32``).
        redshift: the redshift folder, e.g. ``z0.000``.
        Other arguments: see :class:`GravitySource` (CompaSO gives one mass definition, ``N``).
    """

    def __init__(
        self,
        root: str | Path,
        store_dir: str | Path | None = None,
        redshift: str = "z0.000",
        **options: Any,
    ):
        super().__init__(store_dir, **options)
        self.run = AbacusRun(Path(root), str(redshift))

    def info(self) -> SimInfo:
        meta = self.run.header()
        return SimInfo(
            box=float(meta["BoxSize"]),
            redshift=float(meta["Redshift"]),
            omega_m=float(meta["Omega_M"]),
            h=float(meta["H0"]) / 100.0,
            particle_mass=float(meta["ParticleMassHMsun"]),
            halo_catalog="compaso",
        )

    def subhalo_definition(self) -> str:
        return "N"

    def files(self) -> list[Path]:
        return self.run.slice_files() + sorted(self.run.halo_dir.glob("*/*.asdf"))

    def dm_chunks(self) -> tuple[Iterable[Chunk], int | None, str]:
        mass = float(self.run.header()["ParticleMassHMsun"])
        chunks = ((pos, mass) for pos, _ in self.run.particles())
        return chunks, len(self.run.slice_files()), "Abacus field + L0 particle slices"

    def tracers(self) -> Tracers:
        halos = self.run.halos()
        return Tracers(halos["pos"], halos["mass"], halos["vel"], halos["id"])
