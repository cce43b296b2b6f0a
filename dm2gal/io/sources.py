"""Field sources: simulation runs or plain arrays -> a cached :class:`FieldStore`.

Each source has ``store_dir`` and ``build() -> FieldStore`` holding the fields ``dm``
(gravity-only DM mass), ``subhalo`` (gravity-only subhalo masses at their positions) and
``stellar`` (hydro stellar mass), mass per voxel in Msun/h; simulation sources also write
``store_dir/catalogs.h5`` (:func:`dm2gal.io.catalog.save_catalogs`). A store is reused when its
fingerprint (source files with sizes and times, grid, options) matches, rebuilt otherwise. A
build happens in a hidden sibling directory renamed onto ``store_dir`` only when complete, so a
failure leaves nothing behind (and an older store untouched).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dm2gal import __version__
from dm2gal.errors import UserError
from dm2gal.io.camels_table import camels_rows
from dm2gal.io.catalog import CATALOGS_FILE, GalaxyCatalog, HaloCatalog, save_catalogs
from dm2gal.io.gadget import CHUNK_ROWS, GroupCatalog, Snapshot
from dm2gal.io.gravity_fields import paint_subhalo, subfind_tracers
from dm2gal.io.paint import PAINT_SCHEMES, paint_field
from dm2gal.io.parameters import parameter_attrs
from dm2gal.io.recipe import FieldRecipe, Recipe, SimInfo
from dm2gal.io.store import (
    FieldStore,
    StoreError,
    config_hash,
    field_bytes,
    slabs,
    staged_dir,
)

FIELDS = ("dm", "subhalo", "stellar")
MAX_GRID = 4096  # 4096^3 float32 = 256 GiB per field
UNITS = {"pos": "Mpc/h", "mass": "Msun/h", "fields": "Msun/h per voxel"}
STELLAR_MODES = ("catalog", "particles")


class SourceError(UserError, ValueError):
    """A source option is invalid (the message names the option and the rule)."""


def check_grid(grid: Any) -> int:
    """Return ``grid`` as int; rule: an integer with ``2 <= grid <= MAX_GRID``."""
    if isinstance(grid, bool) or not isinstance(grid, int | np.integer):
        raise SourceError(f"option 'grid' must be an integer, got {grid!r}")
    if not 2 <= grid <= MAX_GRID:
        raise SourceError(f"option 'grid' must satisfy 2 <= grid <= {MAX_GRID}, got {grid}")
    return int(grid)


def _stamp(paths: list[Path]) -> list[list[Any]]:
    """Name, size and modification time of each file: cheap change detection."""
    return [[str(p), (s := p.stat()).st_size, s.st_mtime_ns] for p in paths]


class CachedSource:
    """Base: reuse ``store_dir`` if its fingerprint matches, else build it in a staging dir."""

    store_dir: Path
    grid: int
    #: the fields a complete store holds
    fields: tuple[str, ...] = FIELDS

    def store_bytes(self) -> int:
        """Disk bytes of the fields a build writes (float32 ``grid^3`` each), checked free
        before it starts."""
        return field_bytes(self.grid, len(self.fields))

    def fingerprint(self) -> dict[str, Any]:
        raise NotImplementedError

    def write(self, store: FieldStore, fingerprint: dict[str, Any]) -> None:
        raise NotImplementedError

    def is_built(self, fingerprint: dict[str, Any], root: Path) -> bool:
        """True if ``root`` holds every field (and catalogue) built from ``fingerprint``."""
        store = FieldStore(root)
        try:
            meta = store.meta()
        except StoreError:
            return False
        done = all(name in meta["fields"] and store.path(name).is_file() for name in self.fields)
        catalogs = not fingerprint.get("catalogs") or (root / CATALOGS_FILE).is_file()
        return done and catalogs and meta["attrs"].get("fingerprint") == config_hash(fingerprint)

    def build(self) -> FieldStore:
        """Return the store, building it first (in a staging directory renamed when complete)
        if missing or out of date; a store another process completed meanwhile is kept."""
        fingerprint = self.fingerprint()
        if self.is_built(fingerprint, self.store_dir):
            return FieldStore(self.store_dir)
        keep = lambda root: self.is_built(fingerprint, root)  # noqa: E731
        with staged_dir(self.store_dir, keep=keep, nbytes=self.store_bytes()) as staging:
            self.write(FieldStore(staging), fingerprint)
        return FieldStore(self.store_dir)


class SimulationSource(CachedSource):
    """A gravity-only run and its hydro twin (GADGET / AREPO HDF5) -> fields and catalogues.

    Args:
        hydro_dir, dark_dir: output directories of the hydro and gravity-only runs (holding
            ``snapdir_NNN/``, ``groups_NNN/`` or single ``snap_NNN.hdf5`` files).
        snapshot: snapshot number.
        grid: grid side ``N`` (rule: integer, ``2 <= N <= 4096``).
        store_dir: where the field store goes.
        box: expected box side in Mpc/h (checked against the headers); None: no check.
        mas: mass-assignment scheme.
        subhalo_mass: gravity-only subhalo mass column, e.g. ``SubhaloMass`` or
            ``SubhaloMassType[1]``.
        subhalo_min_mass: keep gravity-only subhalos with at least this mass, Msun/h.
        stellar: ``"catalog"`` (``SubhaloMassType[:, 4]`` at ``SubhaloPos``, the paper's) or
            ``"particles"`` (star particles, wind excluded).
        drop_flagged: drop hydro subhalos with ``SubhaloFlag == 0`` (stellar field, galaxies).
        halo_mass: gravity-only halo mass column: ``Group_M_Crit200`` or ``GroupMass``.
        chunk_rows: particles read per chunk.
        progress: progress bars over chunks.
        parameters: the run's place in a parameter space (name -> value, e.g. a CAMELS
            table's row), recorded in the store (:mod:`dm2gal.io.parameters`); None: none.
    """

    def __init__(
        self,
        hydro_dir: str | Path,
        dark_dir: str | Path,
        snapshot: int,
        grid: int,
        store_dir: str | Path,
        box: float | None = None,
        mas: str = "CIC",
        subhalo_mass: str = "SubhaloMass",
        subhalo_min_mass: float = 0.0,
        stellar: str = "catalog",
        drop_flagged: bool = False,
        halo_mass: str = "Group_M_Crit200",
        chunk_rows: int = CHUNK_ROWS,
        progress: bool = True,
        parameters: Mapping[str, float] | None = None,
    ):
        self.hydro_dir, self.dark_dir = Path(hydro_dir), Path(dark_dir)
        self.parameters = {name: float(value) for name, value in (parameters or {}).items()}
        self.snapshot = int(snapshot)
        self.grid = check_grid(grid)
        self.store_dir = Path(store_dir)
        if mas not in PAINT_SCHEMES:
            raise SourceError(f"option 'mas' must be one of {PAINT_SCHEMES}, got {mas!r}")
        if stellar not in STELLAR_MODES:
            raise SourceError(f"option 'stellar' must be one of {STELLAR_MODES}, got {stellar!r}")
        if halo_mass not in ("Group_M_Crit200", "GroupMass"):
            raise SourceError(
                f"option 'halo_mass' must be 'Group_M_Crit200' or 'GroupMass', got {halo_mass!r}"
            )
        if box is not None and not float(box) > 0:
            raise SourceError(f"option 'box' must be > 0 Mpc/h or null, got {box!r}")
        self.box = None if box is None else float(box)
        self.mas, self.stellar, self.halo_mass = mas, stellar, halo_mass
        self.subhalo_mass, self.subhalo_min_mass = subhalo_mass, float(subhalo_min_mass)
        self.drop_flagged, self.chunk_rows, self.progress = bool(drop_flagged), chunk_rows, progress

    def open(self) -> dict[str, Any]:
        """Open every snapshot and catalogue needed and check that they belong together."""
        runs: dict[str, Any] = {
            "dark_snap": Snapshot.find(self.dark_dir, self.snapshot, self.chunk_rows),
            "dark_cat": GroupCatalog.find(self.dark_dir, self.snapshot),
            "hydro_cat": GroupCatalog.find(self.hydro_dir, self.snapshot),
        }
        keys = ("box", "redshift", "hubble", "omega0", "omega_lambda")
        dark = runs["dark_snap"].info
        dark.check_same(runs["dark_cat"].info, keys, "gravity-only snapshot vs its catalogue")
        dark.check_same(runs["hydro_cat"].info, keys, "gravity-only vs hydro run")
        if self.stellar == "particles":
            runs["hydro_snap"] = Snapshot.find(self.hydro_dir, self.snapshot, self.chunk_rows)
            runs["hydro_snap"].info.check_same(
                runs["hydro_cat"].info, keys, "hydro snapshot vs its catalogue"
            )
        if self.box is not None and not np.isclose(dark.box, self.box, rtol=1e-5):
            raise SourceError(
                f"{dark.path}: Header/BoxSize = {dark.box} Mpc/h but option 'box' = {self.box}"
            )
        return runs

    def fingerprint(self) -> dict[str, Any]:
        runs = self.open()
        files = [p for run in runs.values() for p in run.files]
        self._runs = runs
        return {
            "source": type(self).__name__,
            "files": _stamp(files),
            "grid": self.grid,
            "mas": self.mas,
            "options": [self.subhalo_mass, self.subhalo_min_mass, self.stellar, self.drop_flagged],
            "halo_mass": self.halo_mass,
            "catalogs": True,
            "code_version": __version__,
            **({"parameters": self.parameters} if self.parameters else {}),
        }

    def write(self, store: FieldStore, fingerprint: dict[str, Any]) -> None:
        runs = self._runs
        dark_snap: Snapshot = runs["dark_snap"]
        store.init(
            dark_snap.box,
            self.grid,
            source=fingerprint["source"],
            files=[f[0] for f in fingerprint["files"]],
            header={"dark": dark_snap.info.values(), "hydro": runs["hydro_cat"].info.values()},
            particle_mass=float(dark_snap.mass_table[1]) or None,
            mas=self.mas,
            units=UNITS,
            fingerprint=config_hash(fingerprint),
            **parameter_attrs(self.parameters),
        )
        chunks = ((c.pos, c.mass) for c in dark_snap.particles(1))
        paint_field(
            store, "dm", chunks, self.mas, dark_snap.n_chunks(1), self.progress, origin="PartType1"
        )
        tracers = subfind_tracers(runs["dark_cat"], self.subhalo_mass, velocities=False)
        origin = f"Subhalo/{self.subhalo_mass} >= {self.subhalo_min_mass}"
        paint_subhalo(store, tracers.select(self.subhalo_min_mass), self.mas, origin)
        galaxies = self.galaxies(runs["hydro_cat"])
        if self.stellar == "catalog":
            chunks, n_chunks = [(galaxies.pos, galaxies.mstar)], 1
            origin = "Subhalo/SubhaloMassType[4] at SubhaloPos"
        else:
            snap: Snapshot = runs["hydro_snap"]
            chunks = ((c.pos, c.mass) for c in snap.particles(4, exclude_wind=True))
            n_chunks, origin = snap.n_chunks(4), "PartType4 without wind"
        paint_field(store, "stellar", chunks, self.mas, n_chunks, self.progress, origin=origin)
        save_catalogs(
            store.root / CATALOGS_FILE,
            self.halos(runs["dark_cat"]),
            galaxies,
            mass_definition=self.halo_mass,
        )

    def recipe(self, store: FieldStore, inputs: Sequence[str]) -> Recipe:
        """How this source built ``store``'s input fields ``inputs`` (:mod:`dm2gal.io.recipe`)."""
        attrs = store.meta()["attrs"]
        dark = attrs["header"]["dark"]
        sim = SimInfo(
            box=store.box,
            redshift=dark["redshift"],
            omega_m=dark["omega0"],
            h=dark["hubble"],
            particle_mass=attrs.get("particle_mass"),
            halo_catalog="subfind",
        )
        fields = FieldRecipe(tuple(inputs), self.mas, self.subhalo_mass, self.subhalo_min_mass)
        return Recipe(fields, sim, store.box / store.grid)

    def halos(self, cat: GroupCatalog) -> HaloCatalog:
        """Gravity-only FoF groups with a positive ``halo_mass`` (small groups have no
        ``Group_M_Crit200``): ``GroupPos``, ``halo_mass`` column, ``GroupNsubs``."""
        g = cat.read("Group", ["GroupPos", self.halo_mass, "GroupNsubs"])
        keep = (g[self.halo_mass] > 0) & (g["GroupNsubs"] > 0)
        return HaloCatalog(
            pos=g["GroupPos"][keep], mass=g[self.halo_mass][keep], n_sub=g["GroupNsubs"][keep]
        )

    def galaxies(self, cat: GroupCatalog) -> GalaxyCatalog:
        """Hydro subhalos with stellar mass > 0; ``host`` is ``SubhaloGrNr`` (hydro groups),
        ``host_mass`` the hydro group's ``halo_mass`` column: the definition of the gravity-only
        hosts', so an HOD bins both sides alike."""
        names = ["SubhaloPos", "SubhaloMassType[4]", "SubhaloGrNr"]
        s = cat.read("Subhalo", names + (["SubhaloFlag"] if self.drop_flagged else []))
        g = cat.read("Group", ["GroupFirstSub", self.halo_mass])
        mstar, host = s["SubhaloMassType[4]"], s["SubhaloGrNr"].astype(np.int64)
        keep = mstar > 0
        if self.drop_flagged:
            keep &= s["SubhaloFlag"] != 0
        index = np.flatnonzero(keep)
        host = host[keep]
        return GalaxyCatalog(
            pos=s["SubhaloPos"][keep],
            mstar=mstar[keep],
            host=host,
            central=index == g["GroupFirstSub"][host],
            host_mass=g[self.halo_mass][host],
        )


class TNGSource(SimulationSource):
    """IllustrisTNG layout: ``root/<hydro>/output`` and ``root/<dark>/output`` (multi-file).

    Args:
        root: folder holding both runs (e.g. ``TNG100-1`` and ``TNG100-1-Dark``).
        hydro, dark: run folder names; output: the output folder inside each run.
        Other arguments: see :class:`SimulationSource`.
    """

    def __init__(
        self,
        root: str | Path,
        snapshot: int = 99,
        grid: int = 2048,
        store_dir: str | Path | None = None,
        hydro: str = "TNG100-1",
        dark: str = "TNG100-1-Dark",
        output: str = "output",
        **options: Any,
    ):
        root = Path(root)
        store_dir = store_dir or root / "dm2gal_fields" / f"snap{int(snapshot):03d}_grid{grid}"
        super().__init__(
            root / hydro / output, root / dark / output, snapshot, grid, store_dir, **options
        )


class CamelsSource(SimulationSource):
    """CAMELS layout: single files ``root/snap_NNN.hdf5``, ``root/fof_subhalo_tab_NNN.hdf5``.

    Args:
        root: the hydro simulation folder, e.g. ``.../CAMELS/IllustrisTNG/LH_0``.
        dark_root: its gravity-only twin; None: ``<suite>_DM/<name>`` beside the suite,
            e.g. ``.../CAMELS/IllustrisTNG_DM/LH_0``.
        Other arguments: see :class:`SimulationSource`.
    """

    def __init__(
        self,
        root: str | Path,
        snapshot: int = 90,
        grid: int = 256,
        store_dir: str | Path | None = None,
        dark_root: str | Path | None = None,
        **options: Any,
    ):
        root = Path(root)
        dark_root = dark_root or root.parent.parent / f"{root.parent.name}_DM" / root.name
        store_dir = store_dir or root / "dm2gal_fields" / f"snap{int(snapshot):03d}_grid{grid}"
        super().__init__(root, dark_root, snapshot, grid, store_dir, **options)


class CamelsSet:
    """Several simulations of one CAMELS suite (e.g. ``LH_i`` folders) as one multi-universe
    source: each a :class:`CamelsSource` whose store records its row of CAMELS' parameter table
    (:mod:`dm2gal.io.camels_table`); the data module trains on all of them (``stores()``).

    Args:
        suite: the suite folder holding the simulations, e.g. ``.../CAMELS/IllustrisTNG``; each
            gravity-only twin is ``<suite>_DM/<name>``.
        names: the simulations trained on (folder names, rows of ``table``).
        table: CAMELS' parameter table, e.g. ``CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt``.
        store_dir: where the stores go, ``store_dir/<name>`` each.
        test_names: simulations kept for evaluation, never trained on.
        parameters: the table's columns recorded, in order (None: all of them but the seed).
        Other arguments: :class:`CamelsSource`'s, shared by every simulation.
    """

    def __init__(
        self,
        suite: str | Path,
        names: Sequence[str],
        table: str | Path,
        store_dir: str | Path,
        test_names: Sequence[str] = (),
        parameters: Sequence[str] | None = None,
        **options: Any,
    ):
        self.suite, self.table, self.store_dir = Path(suite), Path(table), Path(store_dir)
        self.names, self.test_names = list(names), list(test_names)
        if not self.names:
            raise SourceError("option 'names': expected at least one simulation, e.g. [LH_0]")
        overlap = sorted(set(self.names) & set(self.test_names))
        if overlap:
            raise SourceError(f"options 'names' and 'test_names' share {overlap}")
        self.parameter_names = None if parameters is None else list(parameters)
        self.options = options

    def _sources(self, names: Sequence[str]) -> list[CamelsSource]:
        sources = []
        for row in camels_rows(self.table, list(names)):
            keep = self.parameter_names or list(row.parameters)
            unknown = [name for name in keep if name not in row.parameters]
            if unknown:
                raise SourceError(
                    f"option 'parameters': {unknown} are not columns of {self.table} "
                    f"({list(row.parameters)})"
                )
            sources.append(
                CamelsSource(
                    self.suite / row.name,
                    store_dir=self.store_dir / row.name,
                    parameters={name: row.parameters[name] for name in keep},
                    **self.options,
                )
            )
        return sources

    def training_universes(self) -> list[CamelsSource]:
        """The simulations trained on, in ``names``' order."""
        return self._sources(self.names)

    def test_universes(self) -> list[CamelsSource]:
        """The simulations kept for evaluation."""
        return self._sources(self.test_names)

    @staticmethod
    def build_all(sources: Sequence[CamelsSource]) -> list[FieldStore]:
        """The stores of ``sources`` (each built once), in order."""
        return [source.build() for source in sources]

    def stores(self) -> list[FieldStore]:
        """The training simulations' stores."""
        return self.build_all(self.training_universes())

    def build(self) -> FieldStore:
        """Build every training simulation's store; the first one."""
        return self.stores()[0]


class ArraySource(CachedSource):
    """User-supplied ``.npy`` arrays (mass per voxel, Msun/h) for ``dm``, ``subhalo``, ``stellar``.

    Args:
        dm, subhalo, stellar: paths to cubic ``N^3`` arrays of the same shape.
        box: box side, Mpc/h.
        store_dir: where the field store goes.
        grid: expected ``N`` (None: taken from the arrays).
    """

    def __init__(
        self,
        dm: str | Path,
        subhalo: str | Path,
        stellar: str | Path,
        box: float,
        store_dir: str | Path,
        grid: int | None = None,
    ):
        self.paths = {"dm": Path(dm), "subhalo": Path(subhalo), "stellar": Path(stellar)}
        if not float(box) > 0:
            raise SourceError(f"option 'box' must be > 0 Mpc/h, got {box!r}")
        self.box, self.store_dir = float(box), Path(store_dir)
        self.grid = None if grid is None else check_grid(grid)

    def arrays(self) -> dict[str, np.ndarray]:
        """Open the arrays memory-mapped and check shape, dtype and agreement."""
        out = {}
        for name, path in self.paths.items():
            if not path.is_file():
                raise SourceError(f"{path}: file not found (option '{name}')")
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as err:
                raise SourceError(f"{path}: not a .npy array (option '{name}'): {err}") from err
            if array.ndim != 3 or len(set(array.shape)) != 1:
                raise SourceError(f"{path}: shape {array.shape}, expected a cube N^3")
            if array.dtype.kind not in "fiu":
                raise SourceError(f"{path}: dtype {array.dtype}, expected real numbers")
            out[name] = array
        grid = out["dm"].shape[0]
        for name, array in out.items():
            if array.shape != (grid,) * 3:
                raise SourceError(
                    f"{self.paths[name]}: shape {array.shape} differs from dm's {(grid,) * 3}"
                )
        if self.grid is not None and self.grid != grid:
            raise SourceError(f"option 'grid' = {self.grid} but the arrays are {grid}^3")
        check_grid(grid)
        return out

    def recipe(self, store: FieldStore, inputs: Sequence[str]) -> Recipe:
        """User arrays: the mass assignment, subhalo definition and run are unknown."""
        sim = SimInfo(store.box, None, None, None, None, halo_catalog="arrays")
        fields = FieldRecipe(tuple(inputs), mas="unknown", subhalo_mass="array")
        return Recipe(fields, sim, store.box / store.grid)

    def store_bytes(self) -> int:
        return field_bytes(self._arrays["dm"].shape[0], len(self._arrays))

    def fingerprint(self) -> dict[str, Any]:
        self._arrays = self.arrays()
        return {
            "source": type(self).__name__,
            "files": _stamp(list(self.paths.values())),
            "box": self.box,
            "code_version": __version__,
        }

    def write(self, store: FieldStore, fingerprint: dict[str, Any]) -> None:
        grid = self._arrays["dm"].shape[0]
        store.init(
            self.box,
            grid,
            source=fingerprint["source"],
            files=[f[0] for f in fingerprint["files"]],
            units=UNITS,
            fingerprint=config_hash(fingerprint),
        )
        for name, array in self._arrays.items():
            with store.create(name, origin=str(self.paths[name])) as out:
                for slab in slabs(grid):  # ~64 MiB of float32 per copy
                    block = np.asarray(array[slab], dtype=np.float32)
                    if not np.isfinite(block).all() or (block < 0).any():
                        raise SourceError(
                            f"{self.paths[name]}: non-finite or negative masses in slab "
                            f"{slab.start}"
                        )
                    out[slab] = block
