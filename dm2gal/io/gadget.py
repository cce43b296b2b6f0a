"""Readers for GADGET / AREPO / IllustrisTNG / CAMELS HDF5 snapshots and FoF/SUBFIND catalogues.

Layouts understood (``NNN`` = zero-padded snapshot number):

- multi-file: ``dir/snapdir_NNN/snap_NNN.i.hdf5`` and ``dir/groups_NNN/fof_subhalo_tab_NNN.i.hdf5``;
- single file: ``dir/snap_NNN.hdf5`` and ``dir/fof_subhalo_tab_NNN.hdf5`` (CAMELS, GADGET-4).

Files are read chunk by chunk (one file, or a slice of ``chunk_rows`` rows of one file, at a
time). Units are converted once, here: lengths kpc/h -> Mpc/h, masses 1e10 Msun/h -> Msun/h;
positions are wrapped into ``[0, L)``. Every chunk's header must agree with the first chunk's
(box, redshift, cosmology, file count, totals). Every problem raises :class:`SimFileError` naming
the file and the HDF5 key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from dm2gal.errors import UserError

LENGTH_UNIT = 1e-3  # kpc/h -> Mpc/h
MASS_UNIT = 1e10  # 1e10 Msun/h -> Msun/h
LENGTH_FIELDS = frozenset(
    {"Coordinates", "GroupPos", "GroupCM", "SubhaloPos", "SubhaloCM", "Group_R_Crit200"}
)
MASS_FIELDS = frozenset(
    {
        "Masses",
        "GroupMass",
        "GroupMassType",
        "Group_M_Crit200",
        "Group_M_Mean200",
        "Group_M_TopHat200",
        "SubhaloMass",
        "SubhaloMassType",
        "SubhaloMassInRad",
        "SubhaloMassInRadType",
        "SubhaloMassInHalfRad",
        "SubhaloMassInMaxRad",
    }
)
# GADGET-4 spells some SUBFIND keys differently from AREPO / TNG.
ALIASES = {"SubhaloGrNr": ("SubhaloGroupNr",), "Nsubgroups": ("Nsubhalos",)}
CHUNK_ROWS = 1 << 22


class SimFileError(UserError, ValueError):
    """A snapshot or group-catalogue file is missing, unreadable or inconsistent."""


@contextmanager
def open_hdf5(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` read-only; raise :class:`SimFileError` if it is missing or not HDF5."""
    if not path.is_file():
        raise SimFileError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise SimFileError(f"{path}: not a readable HDF5 file (truncated?): {err}") from err
    with f:
        yield f


def read_dataset(f: h5py.File, key: str, rows: slice = slice(None)) -> np.ndarray:
    """Return rows of dataset ``key`` of open file ``f``, raising :class:`SimFileError`."""
    for name in (key, *_aliases(key)):
        if name in f:
            try:
                return f[name][rows]
            except (OSError, KeyError, ValueError) as err:
                raise SimFileError(f"{f.filename}: cannot read dataset '{name}': {err}") from err
    raise SimFileError(f"{f.filename}: missing dataset '{key}'")


def _aliases(key: str) -> tuple[str, ...]:
    group, _, name = key.rpartition("/")
    prefix = f"{group}/" if group else ""
    return tuple(prefix + alias for alias in ALIASES.get(name, ()))


def header_attr(f: h5py.File, key: str, required: bool = True):
    """Return attribute ``key`` of ``Header`` (or of ``Parameters``, where GADGET-4 keeps it)."""
    for group in ("Header", "Parameters"):
        if group in f:
            attrs = f[group].attrs
            for name in (key, *ALIASES.get(key, ())):
                if name in attrs:
                    return attrs[name]
    if required:
        raise SimFileError(f"{f.filename}: missing header key 'Header/{key}'")
    return None


def to_physical(name: str, values: np.ndarray) -> np.ndarray:
    """Convert dataset ``name`` from file units to Mpc/h and Msun/h (other fields unchanged)."""
    if name in LENGTH_FIELDS:
        return values * np.asarray(LENGTH_UNIT, dtype=values.dtype)
    if name in MASS_FIELDS:
        return values.astype(np.float64) * MASS_UNIT
    return values


def wrap(pos: np.ndarray, box: float) -> np.ndarray:
    """Wrap positions into ``[0, box)`` in place (float rounding of ``box - eps`` goes to 0)."""
    np.mod(pos, box, out=pos)
    pos[pos >= box] = 0
    return pos


@dataclass(frozen=True)
class RunInfo:
    """Box and cosmology of one run at one snapshot, as read from a file header.

    Attributes:
        path: the file the values come from.
        box: box side, Mpc/h.
        redshift, hubble, omega0, omega_lambda: ``Redshift``, ``HubbleParam``, ``Omega0``,
            ``OmegaLambda``.
    """

    path: str
    box: float
    redshift: float
    hubble: float
    omega0: float
    omega_lambda: float

    @classmethod
    def read(cls, f: h5py.File) -> RunInfo:
        get = lambda key: float(header_attr(f, key))  # noqa: E731
        return cls(
            path=str(f.filename),
            box=get("BoxSize") * LENGTH_UNIT,
            redshift=get("Redshift"),
            hubble=get("HubbleParam"),
            omega0=get("Omega0"),
            omega_lambda=get("OmegaLambda"),
        )

    def values(self) -> dict[str, float]:
        """The header values (without the path), for metadata."""
        out = asdict(self)
        out.pop("path")
        return out

    def check_same(self, other: RunInfo, keys: tuple[str, ...], what: str) -> None:
        """Raise :class:`SimFileError` if ``other`` differs from this run in any of ``keys``."""
        names = {
            "box": "BoxSize",
            "redshift": "Redshift",
            "hubble": "HubbleParam",
            "omega0": "Omega0",
            "omega_lambda": "OmegaLambda",
        }
        for key in keys:
            a, b = getattr(self, key), getattr(other, key)
            if not np.isclose(a, b, rtol=1e-5, atol=1e-4 if key == "redshift" else 0.0):
                raise SimFileError(
                    f"{what}: Header/{names[key]} differs: {a} in {self.path} vs {b} in "
                    f"{other.path} (not the same run / cosmology)"
                )


#: Header keys every chunk of a run's snapshot / catalogue shares with its first chunk.
RUN_KEYS = ("BoxSize", "Redshift", "Omega0", "OmegaLambda", "HubbleParam")
SNAPSHOT_KEYS = (
    *RUN_KEYS,
    "NumFilesPerSnapshot",
    "NumPart_Total",
    "NumPart_Total_HighWord",
    "MassTable",
)
CATALOG_KEYS = (*RUN_KEYS, "NumFiles", "Ngroups_Total", "Nsubgroups_Total")


class ChunkHeaders:
    """Check that every chunk of a multi-file snapshot or catalogue has the first chunk's header.

    Args:
        first: the open first chunk.
        keys: header keys to compare; keys the first chunk lacks are not compared.
    """

    def __init__(self, first: h5py.File, keys: tuple[str, ...]):
        self.path = first.filename
        self.values = {}
        for key in keys:
            value = header_attr(first, key, required=False)
            if value is not None:
                self.values[key] = np.asarray(value)

    def check(self, f: h5py.File) -> None:
        """Raise :class:`SimFileError` naming chunk ``f``, the key and both values on a mismatch."""
        for key, expected in self.values.items():
            value = header_attr(f, key, required=False)
            if value is None:
                raise SimFileError(
                    f"{f.filename}: missing header key 'Header/{key}' "
                    f"(the first chunk {self.path} has {expected.tolist()})"
                )
            value = np.asarray(value)
            if expected.dtype.kind == "f" or value.dtype.kind == "f":
                same = value.shape == expected.shape and np.allclose(value, expected, rtol=1e-6)
            else:
                same = np.array_equal(value, expected)
            if not same:
                raise SimFileError(
                    f"{f.filename}: Header/{key} = {value.tolist()} differs from "
                    f"{expected.tolist()} in the first chunk {self.path} (files of different runs?)"
                )


def chunk_files(directory: str | Path, subdir: str, stem: str, count_key: str) -> list[Path]:
    """List the files of one snapshot or catalogue, multi-file or single-file.

    Args:
        directory: the run's output directory.
        subdir: folder of the multi-file layout (``snapdir_NNN`` or ``groups_NNN``).
        stem: file stem (``snap_NNN`` or ``fof_subhalo_tab_NNN``).
        count_key: header key giving the number of files.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SimFileError(f"{directory}: no such directory")
    single = directory / f"{stem}.hdf5"
    for first in (directory / subdir / f"{stem}.0.hdf5", directory / f"{stem}.0.hdf5"):
        if first.is_file():
            with open_hdf5(first) as f:
                n_files = int(header_attr(f, count_key))
            files = [first.with_name(f"{stem}.{i}.hdf5") for i in range(n_files)]
            missing = [p for p in files if not p.is_file()]
            if missing:
                raise SimFileError(
                    f"{missing[0]}: missing chunk file ({first} has Header/{count_key}="
                    f"{n_files}; {len(missing)} missing)"
                )
            return files
    if single.is_file():
        return [single]
    raise SimFileError(
        f"{directory}: no '{subdir}/{stem}.0.hdf5', '{stem}.0.hdf5' or '{stem}.hdf5' found"
    )


@dataclass
class ParticleChunk:
    """Particles of one type from (a slice of) one snapshot file.

    Attributes:
        pos: ``(n, 3)`` positions, Mpc/h, in ``[0, L)``.
        mass: ``(n,)`` masses in Msun/h, or one mass for all (from ``Header/MassTable``).
        path: the file they come from.
    """

    pos: np.ndarray
    mass: np.ndarray | float
    path: Path

    def total_mass(self) -> float:
        """Sum of the masses, Msun/h."""
        if np.ndim(self.mass) == 0:
            return float(self.mass) * len(self.pos)
        return float(np.sum(self.mass, dtype=np.float64))


class Snapshot:
    """A (possibly multi-file) particle snapshot, read chunk by chunk.

    Args:
        files: the snapshot's files in order (see :meth:`find` for the usual layouts).
        chunk_rows: at most this many particles per chunk.
    """

    def __init__(self, files: list[Path], chunk_rows: int = CHUNK_ROWS):
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.files, self.chunk_rows = [Path(p) for p in files], int(chunk_rows)
        self._counts = []
        with open_hdf5(self.files[0]) as f:
            headers = ChunkHeaders(f, SNAPSHOT_KEYS)
        for path in self.files:
            with open_hdf5(path) as f:
                headers.check(f)
                counts = np.asarray(header_attr(f, "NumPart_ThisFile"), dtype=np.int64)
            self._counts.append(counts)
        found = np.sum(self._counts, axis=0)
        with open_hdf5(self.files[0]) as f:
            self.info = RunInfo.read(f)
            self.mass_table = np.asarray(header_attr(f, "MassTable"), dtype=np.float64) * MASS_UNIT
            # single-file cutouts (TNG web API) carry no totals: the file is the total
            low = header_attr(f, "NumPart_Total", required=len(self.files) > 1)
            high = header_attr(f, "NumPart_Total_HighWord", required=False)
        low = found.astype(np.uint64) if low is None else np.asarray(low, dtype=np.uint64)
        high = np.zeros_like(low) if high is None else np.asarray(high, dtype=np.uint64)
        self.num_total = (low + (high << np.uint64(32))).astype(np.int64)
        if not np.array_equal(found, self.num_total):
            raise SimFileError(
                f"{self.files[0]}: Header/NumPart_Total (+HighWord) = {self.num_total.tolist()} "
                f"but the files' NumPart_ThisFile sum to {found.tolist()}"
            )

    @classmethod
    def find(cls, directory: str | Path, snapshot: int, chunk_rows: int = CHUNK_ROWS) -> Snapshot:
        """Open snapshot ``snapshot`` of the run output ``directory`` (multi- or single-file)."""
        tag = f"{int(snapshot):03d}"
        files = chunk_files(directory, f"snapdir_{tag}", f"snap_{tag}", "NumFilesPerSnapshot")
        return cls(files, chunk_rows)

    @property
    def box(self) -> float:
        return self.info.box

    def count(self, ptype: int) -> int:
        """Total number of particles of type ``ptype`` in all files."""
        return int(self.num_total[ptype]) if ptype < len(self.num_total) else 0

    def n_chunks(self, ptype: int) -> int:
        """Number of chunks :meth:`particles` yields for ``ptype``."""
        rows = [c[ptype] for c in self._counts if ptype < len(c)]
        return int(sum(-(-n // self.chunk_rows) for n in rows))

    def particles(self, ptype: int, exclude_wind: bool = False) -> Iterator[ParticleChunk]:
        """Yield the particles of type ``ptype`` chunk by chunk.

        Args:
            ptype: particle type (1 = DM, 4 = stars).
            exclude_wind: drop entries with ``GFM_StellarFormationTime <= 0`` (wind particles).
        """
        for path, counts in zip(self.files, self._counts, strict=True):
            n = int(counts[ptype]) if ptype < len(counts) else 0
            if n == 0:
                continue
            with open_hdf5(path) as f:
                group = f"PartType{ptype}"
                if group not in f:
                    raise SimFileError(
                        f"{path}: missing group '{group}' (Header/NumPart_ThisFile[{ptype}]={n})"
                    )
                for start in range(0, n, self.chunk_rows):
                    rows = slice(start, min(start + self.chunk_rows, n))
                    yield self._chunk(f, path, group, ptype, rows, exclude_wind)

    def _chunk(
        self, f: h5py.File, path: Path, group: str, ptype: int, rows: slice, exclude_wind: bool
    ) -> ParticleChunk:
        n = rows.stop - rows.start
        key = f"{group}/Coordinates"
        pos = read_dataset(f, key, rows)
        if pos.shape != (n, 3):
            raise SimFileError(f"{path}: '{key}' has shape {pos.shape}, expected ({n}, 3)")
        if not np.isfinite(pos).all():
            raise SimFileError(f"{path}: '{key}' has non-finite coordinates")
        pos = wrap(to_physical("Coordinates", pos), self.box)
        mass: np.ndarray | float
        if f"{group}/Masses" in f:
            mass = to_physical("Masses", read_dataset(f, f"{group}/Masses", rows))
            if mass.shape != (n,) or not np.isfinite(mass).all():
                raise SimFileError(f"{path}: '{group}/Masses' must be {n} finite values")
        elif ptype < len(self.mass_table) and self.mass_table[ptype] > 0:
            mass = float(self.mass_table[ptype])
        else:
            raise SimFileError(
                f"{path}: missing dataset '{group}/Masses' and Header/MassTable[{ptype}] is 0"
            )
        if exclude_wind:
            keep = read_dataset(f, f"{group}/GFM_StellarFormationTime", rows) > 0
            pos = pos[keep]
            mass = mass[keep] if np.ndim(mass) else mass
        return ParticleChunk(pos=pos, mass=mass, path=path)


class GroupCatalog:
    """A (possibly multi-file) FoF/SUBFIND group catalogue.

    Args:
        files: the catalogue's files in order (see :meth:`find` for the usual layouts).
    """

    def __init__(self, files: list[Path]):
        self.files = [Path(p) for p in files]
        with open_hdf5(self.files[0]) as f:
            self.info = RunInfo.read(f)
            self.totals = {
                "Group": int(header_attr(f, "Ngroups_Total")),
                "Subhalo": int(header_attr(f, "Nsubgroups_Total")),
            }
            headers = ChunkHeaders(f, CATALOG_KEYS)
        for path in self.files[1:]:
            with open_hdf5(path) as f:
                headers.check(f)

    @classmethod
    def find(cls, directory: str | Path, snapshot: int) -> GroupCatalog:
        """Open the catalogue of snapshot ``snapshot`` in the run output ``directory``."""
        tag = f"{int(snapshot):03d}"
        return cls(chunk_files(directory, f"groups_{tag}", f"fof_subhalo_tab_{tag}", "NumFiles"))

    def read(self, table: str, names: list[str]) -> dict[str, np.ndarray]:
        """Read columns ``names`` of ``table`` (``"Group"`` or ``"Subhalo"``) from all files.

        Lengths and masses come back in Mpc/h and Msun/h; positions wrapped into ``[0, L)``.
        Column names may select a component, e.g. ``"SubhaloMassType[4]"``.
        """
        count_key = {"Group": "Ngroups_ThisFile", "Subhalo": "Nsubgroups_ThisFile"}[table]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for path in self.files:
            with open_hdf5(path) as f:
                n = int(header_attr(f, count_key))
                if n == 0:
                    continue
                for name in names:
                    base, index = _split_column(name)
                    values = read_dataset(f, f"{table}/{base}")
                    if len(values) != n:
                        raise SimFileError(
                            f"{path}: '{table}/{base}' has {len(values)} rows, "
                            f"Header/{count_key} = {n}"
                        )
                    if index is not None:
                        if values.ndim != 2 or index >= values.shape[1]:
                            raise SimFileError(
                                f"{path}: '{table}/{base}' has shape {values.shape}, "
                                f"cannot take column [{index}]"
                            )
                        values = values[:, index]
                    parts[name].append(self._convert(path, table, base, values))
        out = {}
        for name, chunks in parts.items():
            values = np.concatenate(chunks) if chunks else np.zeros(0)
            if len(values) != self.totals[table]:
                raise SimFileError(
                    f"{self.files[0]}: '{table}/{name}' has {len(values)} rows in all files, "
                    f"header total is {self.totals[table]}"
                )
            out[name] = values
        return out

    def _convert(self, path: Path, table: str, name: str, values: np.ndarray) -> np.ndarray:
        if name in LENGTH_FIELDS or name in MASS_FIELDS:
            values = to_physical(name, values.astype(np.float64))
            if not np.isfinite(values).all():
                raise SimFileError(f"{path}: '{table}/{name}' has non-finite values")
        if name.endswith("Pos") or name.endswith("CM"):
            values = wrap(values, self.info.box)
        return values


def _split_column(name: str) -> tuple[str, int | None]:
    match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", name)
    if match is None:
        raise SimFileError(f"bad catalogue column {name!r}: expected 'Name' or 'Name[i]'")
    return match[1], None if match[2] is None else int(match[2])
