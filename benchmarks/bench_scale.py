"""A box end to end at scale: time and peak memory of every stage, one process per stage.

Stages, each run in its own Python process (so each peak RSS is its own; RSS counts the pages
of memory-mapped fields a stage touches):

1. ``snapshot``: a synthetic gravity-only snapshot in the IllustrisTNG multi-file layout,
   ``--particles-per-voxel * grid^3`` DM particles (float32 kpc/h, clustered around halos),
   written chunk by chunk over ``--files`` files, plus FoF/SUBFIND catalogues of the dark and a
   hydro run (one subhalo per halo, stellar mass from the halo mass).
2. ``fields``: ``dm2gal.io.sources.TNGSource.build`` (what ``python -m dm2gal.fields data=tng100``
   runs): dm, subhalo and stellar fields on the ``grid^3`` mesh by streamed CIC painting (chunks
   of particles into one in-memory field, written once), and the catalogues.
3. ``train``: ``--steps`` optimiser steps of the default network (``conf/model/unet3d.yaml``) with
   the project's data module, module and trainer (paper split, no validation), checkpointed.
4. ``predict``: ``python -m dm2gal.predict`` of the whole box from that checkpoint (tiled,
   chunked reads, written through a memory map); with ``--predict-slab X0 DX`` only the x-slab
   ``[X0, X0 + DX)`` (what one task of a SLURM array predicting by slabs does), with the whole
   box's time extrapolated from its rate.
5. ``stats``: P(k) of truth and prediction (``--stats-against dm``: the dm field instead, when
   the prediction is partial) and r(k) on the whole box: ``--stats memory`` with
   ``dm2gal.stats.torch_backend`` (both fields and their FFTs in memory, ~38 bytes per voxel),
   ``--stats outofcore`` with ``dm2gal.stats.outofcore`` (x-slabs and y-pencils through a spill
   file in the work directory); ``auto`` (default) takes the out-of-core path where the
   in-memory one would exceed one field + 2 GiB. Each result is kept in the work directory, and
   the note gives the largest relative difference from the other method's result when both
   were run.

The box side is ``75 * grid / 2048`` Mpc/h, the voxel of the paper's TNG100 grid. Usage::

    python benchmarks/bench_scale.py --grid 128
    python benchmarks/bench_scale.py --grid 256 512     # and extrapolate to 1024^3, 2048^3
    python benchmarks/bench_scale.py --grid 1024 --workdir /scratch/bench --stages snapshot fields

Prints a Markdown table per grid: per stage the seconds, the peak RSS, the RSS after imports and
whether the peak is within one float32 field + 2 GiB; with two or more grids, every stage at
1024^3 and 2048^3 from the two largest (time and memory as a fixed part plus a part growing with
the voxels, N^3 log N for the FFT's time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

STAGES = ("snapshot", "fields", "train", "predict", "stats")
SNAPSHOT = 99
DARK, HYDRO = "Bench-Dark", "Bench"
COSMOLOGY = {"HubbleParam": 0.6774, "Omega0": 0.3089, "OmegaLambda": 0.6911, "OmegaBaryon": 0.0486}
GIB = 2**30
#: peak memory of dm2gal.stats.torch_backend's whole-box cross power per voxel (measured at 512^3)
STATS_BYTES_PER_VOXEL = 38


def box_size(grid: int) -> float:
    """Box side (Mpc/h) with the paper's voxel: 75 Mpc/h on 2048^3."""
    return 75.0 * grid / 2048


def header(f: h5py.File, box_kpc: float, **attrs: object) -> None:
    """The header keys the readers check (box, redshift 0, cosmology) plus ``attrs``."""
    h = f.create_group("Header").attrs
    h["BoxSize"], h["Redshift"], h["Time"] = box_kpc, 0.0, 1.0
    for key, value in {**COSMOLOGY, **attrs}.items():
        h[key] = value


def halos(grid: int, per_voxel: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Halo centres (kpc/h) and masses (1e10 Msun/h, a power law from 1e11 Msun/h), one per
    2000 particles; the same for the same arguments."""
    rng = np.random.default_rng([seed, 1])
    n, box_kpc = max(1, int(per_voxel * grid**3) // 2000), box_size(grid) * 1e3
    pos = rng.uniform(0, box_kpc, (n, 3)).astype(np.float32)
    mass = (10.0 * (1 - rng.random(n)) ** (-1 / 0.9)).astype(np.float32) * np.float32(0.1)
    return pos, mass


def write_snapshot(root: Path, grid: int, per_voxel: float, n_files: int, seed: int) -> int:
    """Write the dark snapshot chunk by chunk; return the number of particles."""
    box_kpc = box_size(grid) * 1e3
    n_total = int(per_voxel * grid**3)
    rng = np.random.default_rng(seed)
    centres, mass = halos(grid, per_voxel, seed)
    weights = mass / mass.sum(dtype=np.float64)
    counts = np.diff(np.linspace(0, n_total, n_files + 1).astype(np.int64))
    particle_mass = 1e-10 * 2.775e11 * COSMOLOGY["Omega0"] * box_size(grid) ** 3 / n_total
    folder = root / DARK / "output" / f"snapdir_{SNAPSHOT:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    block = 1 << 22
    for i, count in enumerate(counts):
        with h5py.File(folder / f"snap_{SNAPSHOT:03d}.{i}.hdf5", "w") as f:
            this = np.zeros(6, np.int64)
            this[1] = count
            total = np.zeros(6, np.int64)
            total[1] = n_total
            header(
                f,
                box_kpc,
                MassTable=np.array([0, particle_mass, 0, 0, 0, 0], np.float64),
                NumFilesPerSnapshot=np.int32(n_files),
                NumPart_ThisFile=this.astype(np.int32),
                NumPart_Total=(total & 0xFFFFFFFF).astype(np.uint32),
                NumPart_Total_HighWord=(total >> 32).astype(np.uint32),
                Flag_DoublePrecision=np.int32(0),
            )
            coords = f.create_group("PartType1").create_dataset("Coordinates", (count, 3), "f4")
            for a in range(0, count, block):
                n = min(block, count - a)
                # half the particles in Gaussian clumps of 300 kpc/h around mass-weighted halos
                pos = rng.uniform(0, box_kpc, (n, 3)).astype(np.float32)
                clumped = rng.random(n) < 0.5
                host = rng.choice(len(centres), clumped.sum(), p=weights)
                offsets = rng.normal(0, 300.0, (len(host), 3)).astype(np.float32)
                pos[clumped] = np.mod(centres[host] + offsets, np.float32(box_kpc))
                coords[a : a + n] = pos
    return n_total


def write_catalogue(
    root: Path, run: str, grid: int, per_voxel: float, seed: int, stars: bool
) -> None:
    """A one-file FoF/SUBFIND catalogue of :func:`halos`, one subhalo per halo."""
    box_kpc = box_size(grid) * 1e3
    pos, mass = halos(grid, per_voxel, seed)
    n = len(pos)
    mtype = np.zeros((n, 6), np.float32)
    mtype[:, 1] = mass
    if stars:  # a stellar-to-halo mass ratio peaking at 3% near 1e12 Msun/h
        m = mass.astype(np.float64) * 1e10
        mtype[:, 4] = (0.06 * mass / ((m / 1e12) ** -1.0 + (m / 1e12) ** 0.6)).astype(np.float32)
    folder = root / run / "output" / f"groups_{SNAPSHOT:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / f"fof_subhalo_tab_{SNAPSHOT:03d}.0.hdf5", "w") as f:
        header(f, box_kpc, Ngroups_ThisFile=np.int32(n), Ngroups_Total=np.int32(n),
               Nsubgroups_ThisFile=np.int32(n), Nsubgroups_Total=np.int32(n),
               NumFiles=np.int32(1))  # fmt: skip
        g = f.create_group("Group")
        for key, value in {
            "GroupPos": pos,
            "GroupMass": mass,
            "Group_M_Crit200": 0.8 * mass,
            "GroupNsubs": np.ones(n, np.int32),
            "GroupFirstSub": np.arange(n, dtype=np.int32),
        }.items():
            g.create_dataset(key, data=value)
        s = f.create_group("Subhalo")
        for key, value in {
            "SubhaloPos": pos,
            "SubhaloMass": mtype.sum(axis=1),
            "SubhaloMassType": mtype,
            "SubhaloGrNr": np.arange(n, dtype=np.int32),
            "SubhaloFlag": np.ones(n, np.uint8),
        }.items():
            s.create_dataset(key, data=value)


def data_overrides(work: Path, grid: int) -> list[str]:
    """``conf/train.yaml`` overrides reading the synthetic runs (``data=tng100`` layout)."""
    return [
        "data=tng100",
        f"data.root={work / 'sim'}",
        f"data.grid={grid}",
        f"data.source.hydro={HYDRO}",
        f"data.source.dark={DARK}",
        f"data.source.box={box_size(grid)}",
        f"data.source.store_dir={work / 'store'}",
        "data.source.progress=false",
        f"paths.data_dir={work / 'data'}",
    ]


def stage_snapshot(work: Path, opts: argparse.Namespace) -> str:
    n = write_snapshot(work / "sim", opts.grid, opts.particles_per_voxel, opts.files, opts.seed)
    for run, stars in ((DARK, False), (HYDRO, True)):
        write_catalogue(work / "sim", run, opts.grid, opts.particles_per_voxel, opts.seed, stars)
    size = sum(p.stat().st_size for p in (work / "sim").rglob("*.hdf5"))
    return f"{n:.3g} particles in {opts.files} files, {size / GIB:.2f} GiB"


def stage_fields(work: Path, opts: argparse.Namespace) -> str:
    from hydra.utils import instantiate

    from dm2gal.train.build import compose_train, data_module_config

    cfg = compose_train(data_overrides(work, opts.grid))
    store = instantiate(data_module_config(cfg.data).source).build()
    return f"{', '.join(store.fields())} of {opts.grid}^3 ({3 * opts.grid**3 * 4 / GIB:.2f} GiB)"


def train_config(work: Path, opts: argparse.Namespace):
    from omegaconf import OmegaConf

    from dm2gal.train.build import compose_train

    overrides = [
        *data_overrides(work, opts.grid),
        "model=unet3d",
        "logger=none",
        "callbacks=none",
        "optim.scheduler=null",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={opts.steps}",
        "trainer.limit_val_batches=0",
        "+trainer.enable_progress_bar=false",
        f"paths.output_dir={work / 'train'}",
        f"sampler.samples_per_epoch={opts.steps * 8}",
    ]
    cfg = compose_train(overrides)
    (work / "train" / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, work / "train" / ".hydra" / "config.yaml")
    return cfg


def stage_train(work: Path, opts: argparse.Namespace) -> str:
    from dm2gal.train.build import build

    cfg = train_config(work, opts)
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(work / "train" / "model.ckpt")
    return f"{trainer.global_step} steps of batch {cfg.data.batch_size}, crop {cfg.data.crop}"


def stage_predict(work: Path, opts: argparse.Namespace) -> str:
    from omegaconf import OmegaConf

    from dm2gal.predict import predict

    run = work / "train"
    if opts.predict_slab is not None:
        return predict_slab(work, opts, *opts.predict_slab)
    predict(OmegaConf.create({
        "run_dir": str(run), "ckpt_path": str(run / "model.ckpt"), "store": str(work / "store"),
        "out": str(work / "prediction"), "name": "stellar", "tile": opts.tile,
        "batch_size": None, "calibration": None, "samples": 0, "seed": 0,
    }))  # fmt: skip
    return f"whole {opts.grid}^3 box, tile {opts.tile}"


def predict_slab(work: Path, opts: argparse.Namespace, x0: int, dx: int) -> str:
    """Predict the x-slab ``[x0, x0 + dx)`` of the box into ``prediction_slab.npy``."""
    from dm2gal.data.regions import Region
    from dm2gal.infer.predict import PredictOptions, check_tile, predict_fields
    from dm2gal.io.store import FieldStore
    from dm2gal.train.runs import load_run

    run = work / "train"
    run_cfg, module, datamodule, _ = load_run(run, run / "model.ckpt", setup_data=False)
    source = FieldStore(work / "store")
    grid = source.grid
    region = Region((x0, 0, 0), (dx, grid, grid), grid)
    options = PredictOptions(
        tile=check_tile(module.net, opts.tile),
        batch_size=(run_cfg.get("evaluation") or {}).get("batch_size", 4),
        channels_last=module.hparams.get("channels_last", False),
        progress=False,
    )
    out = np.lib.format.open_memmap(
        work / "prediction_slab.npy", mode="w+", dtype=np.float32, shape=region.size
    )
    cpu, start = cpu_seconds(), time.perf_counter()
    inputs = [source.read(field) for field in datamodule.inputs]
    predict_fields(module.net, datamodule.transform, inputs, region, options, out=out)
    out.flush()
    rate = dx * grid * grid / (time.perf_counter() - start)
    cpu_rate = dx * grid * grid / (cpu_seconds() - cpu)
    return (
        f"x-slab [{x0}, {x0 + dx}) of {grid}^3 ({dx / grid:.2%} of the box), tile {opts.tile}: "
        f"{rate:.3g} voxels/s ({cpu_rate:.3g} per CPU second); whole box at these rates "
        f"{grid**3 / rate / 3600:.3g} h wall, {grid**3 / cpu_rate / 3600:.3g} h CPU"
    )


def stats_method(opts: argparse.Namespace) -> str:
    """``--stats``, with ``auto`` resolved: out of core where the in-memory path's
    :data:`STATS_BYTES_PER_VOXEL` exceed one float32 field + 2 GiB."""
    if opts.stats != "auto":
        return opts.stats
    fits = STATS_BYTES_PER_VOXEL * opts.grid**3 <= 4 * opts.grid**3 + 2 * GIB
    return "memory" if fits else "outofcore"


def stage_stats(work: Path, opts: argparse.Namespace) -> str:
    import torch

    from dm2gal.io.store import FieldStore
    from dm2gal.stats.outofcore import store_cross_power
    from dm2gal.stats.torch_backend import cross_power_torch

    truth = FieldStore(work / "store")
    other, name = (
        (FieldStore(work / "prediction"), "stellar")
        if opts.stats_against == "prediction"
        else (truth, "dm")
    )
    method = stats_method(opts)
    if method == "memory":
        fields = (truth.read("stellar", mmap=False), other.read(name, mmap=False))
        a, b = (torch.from_numpy(field) for field in fields)
        result = cross_power_torch(a, b, box_size(opts.grid))
        k, pk_a, pk_b, _, r = (t.numpy() for t in result)
    else:
        xp = store_cross_power(truth, "stellar", other, name, work_dir=work)
        k, pk_a, pk_b, r = xp.k, xp.pk_a, xp.pk_b, xp.r
    np.savez(work / f"stats_{method}_{opts.stats_against}.npz", k=k, pk_a=pk_a, pk_b=pk_b, r=r)
    i = int(np.searchsorted(k, 1.0))
    note = (
        f"{method}, stellar vs {opts.stats_against}: {len(k)} k bins; at k={k[i]:.2f} h/Mpc "
        f"P_b/P_a={pk_b[i] / pk_a[i]:.3g}, r={r[i]:.3g}"
    )
    twin = "outofcore" if method == "memory" else "memory"
    saved = work / f"stats_{twin}_{opts.stats_against}.npz"
    if saved.is_file():
        ref = np.load(saved)
        rel = [np.max(np.abs(v / ref[key] - 1)) for key, v in (("pk_a", pk_a), ("pk_b", pk_b))]
        note += (
            f"; vs {twin}: max rel. diff P_a {rel[0]:.1e}, P_b {rel[1]:.1e}, r "
            f"{np.max(np.abs(r / ref['r'] - 1)):.1e} (max abs. diff of r "
            f"{np.max(np.abs(r - ref['r'])):.1e})"
        )
    return note


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``RssAnon``...) in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key} line")


class AnonPeak(threading.Thread):
    """Samples ``RssAnon`` (memory not backed by files: what a memory map's pages are not)
    every ``interval`` seconds and keeps the largest value."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.peak, self.done = interval, status_kib("RssAnon"), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, status_kib("RssAnon"))


def run_stage(name: str, work: Path, opts: argparse.Namespace) -> dict:
    """Run one stage in this process; return its seconds, peak RSS (all resident pages, those
    of memory-mapped files included), peak anonymous RSS (sampled), the RSS after imports
    (``base``; bytes) and a note. Imports are done before the clock starts."""
    import dm2gal.io.sources  # noqa: F401
    import dm2gal.predict  # noqa: F401
    import dm2gal.stats.outofcore  # noqa: F401
    import dm2gal.stats.torch_backend  # noqa: F401
    import dm2gal.train.pipeline  # noqa: F401

    base = status_kib("VmRSS")
    sampler = AnonPeak()
    sampler.start()
    cpu0, start = cpu_seconds(), time.perf_counter()
    note = globals()[f"stage_{name}"](work, opts)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    sampler.done.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"stage": name, "seconds": seconds, "cpu": cpu, "load": os.getloadavg()[1],
            "peak_rss": peak, "peak_anon": sampler.peak, "base": base, "note": note}  # fmt: skip


def fit(rows: dict[int, dict], stage: str, key: str, target: int) -> float:
    """``key`` of ``stage`` at ``target^3`` from the two largest grids measured, as
    ``a + b * work(N)`` with work ``N^3`` (``N^3 log N`` for the FFT stage's time)."""
    (g1, r1), (g2, r2) = sorted(rows.items())[-2:]
    work = lambda n: n**3 * (math.log(n) if stage == "stats" and key == "seconds" else 1)  # noqa: E731
    slope = (r2[stage][key] - r1[stage][key]) / (work(g2) - work(g1))
    return r2[stage][key] + slope * (work(target) - work(g2))


def table(rows: list[dict], grid: int) -> str:
    """The Markdown report of the stages measured at ``grid``."""
    field = 4 * grid**3 / GIB
    lines = [
        f"grid {grid}^3 (one field {field:.3g} GiB), box {box_size(grid):g} Mpc/h:\n",
        "| stage | wall s | CPU s (user+sys) | load (5 min) | peak RSS (GiB) | peak anon (GiB) "
        "| after imports (GiB) | <= one field + 2 GiB | what |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rss = row["peak_rss"] / GIB
        lines.append(
            f"| {row['stage']} | {row['seconds']:.1f} | {row['cpu']:.1f} | {row['load']:.1f} "
            f"| {rss:.2f} | {row['peak_anon'] / GIB:.2f} | "
            f"{row['base'] / GIB:.2f} | "
            f"{'yes' if rss <= field + 2 else 'no'} | {row['note']} |"
        )
    lines.append(
        f"| all | {sum(r['seconds'] for r in rows):.1f} | {sum(r['cpu'] for r in rows):.1f} "
        "| | | | | | |"
    )
    return "\n".join(lines)


def extrapolation(rows: dict[int, dict], targets: tuple[int, ...] = (1024, 2048)) -> str:
    """Every stage at ``targets`` from the two largest grids (time and peak RSS linear in the
    work; see :func:`fit`), with the goal of one field + 2 GiB."""
    grids = sorted(rows)[-2:]
    head = " | ".join(f"{t}^3 s | {t}^3 GiB RSS / anon (goal {4 * t**3 / GIB + 2:.0f})"
                      for t in targets)  # fmt: skip
    lines = [
        f"extrapolated from {grids[0]}^3 and {grids[1]}^3:\n",
        f"| stage | {head} |",
        "|---|" + "---|---|" * len(targets),
    ]
    for stage in rows[grids[1]]:
        cells = [
            f"{fit(rows, stage, 'seconds', t):.3g} | {fit(rows, stage, 'peak_rss', t) / GIB:.3g}"
            f" / {fit(rows, stage, 'peak_anon', t) / GIB:.3g}"
            for t in targets
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, nargs="+", default=[128],
                        help="mesh sides N; two or more: extrapolate (default 128)")  # fmt: skip
    parser.add_argument("--particles-per-voxel", type=float, default=0.25,
                        help="DM particles per voxel (0.25: 2.7e8 at 1024^3)")  # fmt: skip
    parser.add_argument("--files", type=int, default=8, help="snapshot chunk files")
    parser.add_argument("--steps", type=int, default=4, help="training steps")
    parser.add_argument("--tile", type=int, default=32, help="prediction tile side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--predict-slab",
        type=int,
        nargs=2,
        metavar=("X0", "DX"),
        help="predict only the x-slab [X0, X0 + DX) (default: the whole box)",
    )
    parser.add_argument(
        "--stats",
        choices=("auto", "memory", "outofcore"),
        default="auto",
        help="whole-box statistics in memory or out of core (default: auto)",
    )
    parser.add_argument(
        "--stats-against",
        choices=("prediction", "dm"),
        default="prediction",
        help="the field whose P(k) and r(k) with the stellar truth are measured",
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--run-stage", choices=STAGES, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.run_stage:
        opts.grid = opts.grid[0]
        print(json.dumps(run_stage(opts.run_stage, opts.workdir, opts)))
        return
    root = opts.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    rows: dict[int, dict] = {}
    try:
        for grid in opts.grid:
            work = root / f"grid{grid}"
            work.mkdir(parents=True, exist_ok=True)
            rows[grid] = {}
            for name in opts.stages:
                options = {"grid": grid, "run-stage": name, "workdir": work, "files": opts.files,
                           "particles-per-voxel": opts.particles_per_voxel, "tile": opts.tile,
                           "steps": opts.steps, "seed": opts.seed, "stats": opts.stats,
                           "stats-against": opts.stats_against,
                           "predict-slab": opts.predict_slab}  # fmt: skip
                cmd = [sys.executable, __file__]
                for key, value in options.items():
                    if value is not None:
                        cmd += [
                            f"--{key}",
                            *map(str, value if isinstance(value, list) else [value]),
                        ]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"stage {name} at {grid}^3 failed:\n{done.stderr[-3000:]}")
                rows[grid][name] = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{grid}^3 {json.dumps(rows[grid][name])}", file=sys.stderr, flush=True)
            print(table(list(rows[grid].values()), grid) + "\n", flush=True)
    finally:
        if opts.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    if len(rows) > 1:
        print(extrapolation(rows))


if __name__ == "__main__":
    main()
