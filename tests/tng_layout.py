"""Write small fake simulation files in the exact IllustrisTNG / CAMELS HDF5 layout.

Used by the reader, field and source tests (and free for other tests). Everything is in file
units: kpc/h and 1e10 Msun/h. :func:`make_pair` writes a matching gravity-only + hydro pair and
returns the inputs in dm2gal units (Mpc/h, Msun/h) for checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

COSMOLOGY = {"HubbleParam": 0.6774, "Omega0": 0.3089, "OmegaLambda": 0.6911, "OmegaBaryon": 0.0486}


def _split(n: int, n_files: int, empty: int | None) -> list[int]:
    """Rows per file: ``n`` spread over the files, file ``empty`` gets none."""
    full = [i for i in range(n_files) if i != empty] or [0]
    counts = [0] * n_files
    for i, part in zip(full, np.array_split(np.arange(n), len(full)), strict=True):
        counts[i] = len(part)
    return counts


def _paths(directory: Path, subdir: str, stem: str, n_files: int) -> list[Path]:
    if n_files == 1:
        return [directory / f"{stem}.hdf5"]
    (directory / subdir).mkdir(parents=True, exist_ok=True)
    return [directory / subdir / f"{stem}.{i}.hdf5" for i in range(n_files)]


def write_snapshot(
    directory: Path,
    snapshot: int,
    particles: dict[int, dict[str, np.ndarray]],
    *,
    box_kpc: float,
    redshift: float = 0.0,
    mass_table: list[float] | None = None,
    n_files: int = 3,
    empty: int | None = 1,
    high_word: list[int] | None = None,
    cosmology: dict[str, float] | None = None,
) -> list[Path]:
    """Write a snapshot: ``particles[ptype][dataset]`` split over ``n_files`` chunk files.

    ``n_files == 1`` writes ``directory/snap_NNN.hdf5`` (CAMELS); otherwise
    ``directory/snapdir_NNN/snap_NNN.i.hdf5`` (TNG) where chunk ``empty`` has no particles
    and no ``PartType`` groups. ``NumPart_Total`` holds the low 32 bits, ``high_word`` the rest.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{snapshot:03d}"
    paths = _paths(directory, f"snapdir_{tag}", f"snap_{tag}", n_files)
    totals = np.zeros(6, dtype=np.int64)
    splits = {}
    for ptype, data in particles.items():
        totals[ptype] = len(data["Coordinates"])
        splits[ptype] = np.cumsum([0, *_split(int(totals[ptype]), n_files, empty)])
    for i, path in enumerate(paths):
        with h5py.File(path, "w") as f:
            h = f.create_group("Header").attrs
            this = np.zeros(6, dtype=np.int32)
            for ptype, data in particles.items():
                a, b = splits[ptype][i], splits[ptype][i + 1]
                this[ptype] = b - a
                if b > a:
                    g = f.create_group(f"PartType{ptype}")
                    for name, values in data.items():
                        g.create_dataset(name, data=values[a:b])
            h["BoxSize"] = np.float64(box_kpc)
            h["Redshift"] = np.float64(redshift)
            h["Time"] = np.float64(1.0 / (1.0 + redshift))
            for key, value in (cosmology or COSMOLOGY).items():
                h[key] = np.float64(value)
            h["MassTable"] = np.asarray(mass_table or [0.0] * 6, dtype=np.float64)
            h["NumFilesPerSnapshot"] = np.int32(n_files)
            h["NumPart_ThisFile"] = this
            h["NumPart_Total"] = (totals & 0xFFFFFFFF).astype(np.uint32)
            h["NumPart_Total_HighWord"] = np.asarray(high_word or [0] * 6, dtype=np.uint32)
            h["Flag_DoublePrecision"] = np.int32(1)
            h["UnitLength_in_cm"] = np.float64(3.085678e21)
            h["UnitMass_in_g"] = np.float64(1.989e43)
            f.create_group("Config")
            f.create_group("Parameters")
    return paths


def write_groups(
    directory: Path,
    snapshot: int,
    groups: dict[str, np.ndarray],
    subhalos: dict[str, np.ndarray],
    *,
    box_kpc: float,
    redshift: float = 0.0,
    n_files: int = 3,
    empty: int | None = 1,
    cosmology: dict[str, float] | None = None,
) -> list[Path]:
    """Write a FoF/SUBFIND catalogue ``fof_subhalo_tab_NNN`` split over ``n_files`` files.

    Groups and subhalos are split independently; chunk ``empty`` has neither (no datasets).
    """
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{snapshot:03d}"
    paths = _paths(directory, f"groups_{tag}", f"fof_subhalo_tab_{tag}", n_files)
    n_grp, n_sub = len(groups["GroupPos"]), len(subhalos["SubhaloPos"])
    g_cut = np.cumsum([0, *_split(n_grp, n_files, empty)])
    s_cut = np.cumsum([0, *_split(n_sub, n_files, empty)])
    for i, path in enumerate(paths):
        with h5py.File(path, "w") as f:
            h = f.create_group("Header").attrs
            for table, data, cut in (("Group", groups, g_cut), ("Subhalo", subhalos, s_cut)):
                g = f.create_group(table)
                for name, values in data.items():
                    if cut[i + 1] > cut[i]:
                        g.create_dataset(name, data=values[cut[i] : cut[i + 1]])
            h["BoxSize"] = np.float64(box_kpc)
            h["Redshift"] = np.float64(redshift)
            h["Time"] = np.float64(1.0 / (1.0 + redshift))
            for key, value in (cosmology or COSMOLOGY).items():
                h[key] = np.float64(value)
            h["Ngroups_ThisFile"] = np.int32(g_cut[i + 1] - g_cut[i])
            h["Ngroups_Total"] = np.int32(n_grp)
            h["Nsubgroups_ThisFile"] = np.int32(s_cut[i + 1] - s_cut[i])
            h["Nsubgroups_Total"] = np.int32(n_sub)
            h["NumFiles"] = np.int32(n_files)
    return paths


@dataclass
class FakePair:
    """What :func:`make_pair` wrote, in dm2gal units (Mpc/h, Msun/h)."""

    box: float
    hydro_dir: Path
    dark_dir: Path
    dm_pos: np.ndarray
    dm_mass: float
    dark_sub_pos: np.ndarray
    dark_sub_mass: np.ndarray
    dark_groups: dict[str, np.ndarray]
    hydro_sub_pos: np.ndarray
    hydro_sub_mstar: np.ndarray
    hydro_sub_grnr: np.ndarray
    hydro_sub_flag: np.ndarray
    hydro_first_sub: np.ndarray
    hydro_group_mass: np.ndarray
    hydro_group_m200: np.ndarray
    star_pos: np.ndarray
    star_mass: np.ndarray
    star_wind: np.ndarray
    files: list[Path] = field(default_factory=list)


def _catalogue(rng: np.random.Generator, n_grp: int, n_sub: int, box_kpc: float, hydro: bool):
    nsubs = np.bincount(rng.integers(0, n_grp, n_sub), minlength=n_grp).astype(np.int32)
    grnr = np.repeat(np.arange(n_grp, dtype=np.int32), nsubs)
    first = np.where(nsubs > 0, np.cumsum(nsubs) - nsubs, -1).astype(np.int32)
    groups = {
        "GroupPos": rng.uniform(0, box_kpc, (n_grp, 3)).astype(np.float32),
        "GroupMass": rng.uniform(10, 1000, n_grp).astype(np.float32),
        "Group_M_Crit200": rng.uniform(5, 800, n_grp).astype(np.float32),
        "GroupNsubs": nsubs,
        "GroupFirstSub": first,
    }
    mtype = np.zeros((n_sub, 6), dtype=np.float32)
    mtype[:, 1] = rng.uniform(0.01, 100, n_sub)
    if hydro:
        mtype[:, 4] = np.where(rng.random(n_sub) < 0.7, rng.uniform(1e-3, 1.0, n_sub), 0.0)
    subhalos = {
        "SubhaloPos": rng.uniform(-0.01 * box_kpc, 1.01 * box_kpc, (n_sub, 3)).astype(np.float32),
        "SubhaloMass": mtype.sum(axis=1),
        "SubhaloMassType": mtype,
        "SubhaloGrNr": grnr,
        "SubhaloFlag": (rng.random(n_sub) < 0.9).astype(np.uint8),
    }
    return groups, subhalos


def make_pair(
    root: Path,
    *,
    layout: str = "tng",
    snapshot: int = 99,
    box_kpc: float = 10_000.0,
    n_dm: int = 2000,
    n_star: int = 300,
    seed: int = 0,
) -> FakePair:
    """Write a gravity-only + hydro pair of runs (snapshots and catalogues) under ``root``.

    ``layout="tng"``: ``root/TNG100-1[-Dark]/output`` with 3 chunk files (chunk 1 empty).
    ``layout="camels"``: ``root/IllustrisTNG/LH_0`` and ``root/IllustrisTNG_DM/LH_0``, single files.
    DM particles have no ``Masses`` (``MassTable[1]``); stars carry wind particles.
    """
    rng = np.random.default_rng(seed)
    if layout == "tng":
        hydro_dir, dark_dir = root / "TNG100-1" / "output", root / "TNG100-1-Dark" / "output"
        n_files = 3
    elif layout == "camels":
        hydro_dir, dark_dir = root / "IllustrisTNG" / "LH_0", root / "IllustrisTNG_DM" / "LH_0"
        n_files = 1
    else:
        raise ValueError(f"layout must be 'tng' or 'camels', got {layout!r}")
    empty = 1 if n_files > 2 else None
    dm_mass = 0.05
    # positions slightly outside the box, as codes write them, must wrap
    dm_pos = rng.uniform(-0.02 * box_kpc, 1.02 * box_kpc, (n_dm, 3))
    dark = {1: {"Coordinates": dm_pos, "ParticleIDs": np.arange(n_dm, dtype=np.uint64)}}
    files = write_snapshot(
        dark_dir,
        snapshot,
        dark,
        box_kpc=box_kpc,
        mass_table=[0, dm_mass, 0, 0, 0, 0],
        n_files=n_files,
        empty=empty,
    )
    dark_groups, dark_subs = _catalogue(rng, 40, 120, box_kpc, hydro=False)
    files += write_groups(
        dark_dir, snapshot, dark_groups, dark_subs, box_kpc=box_kpc, n_files=n_files, empty=empty
    )
    star_pos = rng.uniform(0, box_kpc, (n_star, 3))
    star_mass = rng.uniform(1e-4, 1e-3, n_star).astype(np.float32)
    sft = rng.uniform(0.1, 1.0, n_star).astype(np.float32)
    wind = rng.random(n_star) < 0.2
    sft[wind] = -rng.uniform(0.1, 1.0, wind.sum())
    sft[np.flatnonzero(wind)[:1]] = 0.0  # a formation time of exactly 0 is wind too
    gas_n = 50
    hydro = {
        0: {
            "Coordinates": rng.uniform(0, box_kpc, (gas_n, 3)),
            "Masses": np.full(gas_n, 0.01, np.float32),
        },
        1: {"Coordinates": rng.uniform(0, box_kpc, (n_dm, 3))},
        4: {"Coordinates": star_pos, "Masses": star_mass, "GFM_StellarFormationTime": sft},
    }
    files += write_snapshot(
        hydro_dir,
        snapshot,
        hydro,
        box_kpc=box_kpc,
        mass_table=[0, dm_mass * 0.84, 0, 0, 0, 0],
        n_files=n_files,
        empty=empty,
    )
    hydro_groups, hydro_subs = _catalogue(rng, 30, 100, box_kpc, hydro=True)
    files += write_groups(
        hydro_dir, snapshot, hydro_groups, hydro_subs, box_kpc=box_kpc, n_files=n_files, empty=empty
    )
    box = box_kpc / 1e3
    return FakePair(
        box=box,
        hydro_dir=hydro_dir,
        dark_dir=dark_dir,
        dm_pos=np.mod(dm_pos / 1e3, box),
        dm_mass=dm_mass * 1e10,
        dark_sub_pos=np.mod(dark_subs["SubhaloPos"].astype(np.float64) / 1e3, box),
        dark_sub_mass=dark_subs["SubhaloMass"].astype(np.float64) * 1e10,
        dark_groups=dark_groups,
        hydro_sub_pos=np.mod(hydro_subs["SubhaloPos"].astype(np.float64) / 1e3, box),
        hydro_sub_mstar=hydro_subs["SubhaloMassType"][:, 4].astype(np.float64) * 1e10,
        hydro_sub_grnr=hydro_subs["SubhaloGrNr"],
        hydro_sub_flag=hydro_subs["SubhaloFlag"],
        hydro_first_sub=hydro_groups["GroupFirstSub"],
        hydro_group_mass=hydro_groups["GroupMass"].astype(np.float64) * 1e10,
        hydro_group_m200=hydro_groups["Group_M_Crit200"].astype(np.float64) * 1e10,
        star_pos=star_pos / 1e3,
        star_mass=star_mass.astype(np.float64) * 1e10,
        star_wind=sft <= 0,
        files=files,
    )
