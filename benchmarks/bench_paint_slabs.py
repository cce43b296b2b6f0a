"""A big box painted in x-slabs (:func:`dm2gal.paint.slabs.paint_slab`): one slab's wall, CPU
and peak RSS, each slab job in a fresh subprocess as a SLURM array task would run it.

The gravity-only run is a mock store of side ``--factor`` x ``--grid`` (default 4 x 256 =
1024^3, a 600 Mpc/h box at the default mock's 0.586 Mpc/h voxel) made of periodic copies of the
``--grid`` mock universe of :mod:`bench_paint_pipeline` (``--ratio`` voxels per particle spacing):
its ``dm`` field and its halos (with their velocities) tiled ``factor^3`` times. Generating a
1024^3 mock universe takes more memory and time than this shared machine has; the tiled box
has the same voxel, the same fields per voxel and the real size, which is what a slab's cost
depends on. The network is the untrained default one of :mod:`bench_paint_pipeline`.

The first slab job builds the input fields (``dm`` copied, ``subhalo`` painted, tracers) once
into ``<out>.slabs/inputs``; the later ones reuse them, so a later slab's numbers are one slab's
and the first one's difference is the input build. Prints a Markdown table. Usage::

    nice -n 10 python benchmarks/bench_paint_slabs.py --slabs 16 --run 0 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_paint_pipeline import mock, untrained_model


def tiled_store(grid: int, ratio: int, factor: int, cache: Path) -> Path:
    """The mock of side ``grid`` tiled ``factor`` times per side into ``cache`` (built once)."""
    from dm2gal.io.catalog import (
        CATALOGS_FILE,
        GalaxyCatalog,
        HaloCatalog,
        load_catalogs,
        save_catalogs,
    )
    from dm2gal.io.store import FieldStore, staged_dir

    universe = mock(grid, ratio, cache)
    small = universe.build()
    root = cache / f"tiled_{universe.hash}_x{factor}"
    if FieldStore(root).exists():
        return root
    with staged_dir(root) as staging:
        store = FieldStore(staging)
        attrs = small.meta()["attrs"]
        store.init(small.box * factor, grid * factor, source="mock", config=attrs["config"],
                   particle_mass=attrs["particle_mass"], tiled_from=str(small.root),
                   factor=factor)  # fmt: skip
        dm = small.read("dm", mmap=False)
        with store.create("dm", units="Msun/h per voxel", mas="CIC") as field:
            for i in range(factor):
                field[i * grid : (i + 1) * grid] = np.tile(dm, (1, factor, factor))
        halos, _ = load_catalogs(small.root / CATALOGS_FILE)
        shifts = np.stack(np.indices((factor,) * 3), -1).reshape(-1, 3) * small.box
        n = len(shifts)
        tiled = HaloCatalog(
            pos=(halos.pos[None] + shifts[:, None]).reshape(-1, 3),
            mass=np.tile(halos.mass, n),
            n_sub=np.tile(halos.n_sub, n),
            vel=np.tile(halos.vel, (n, 1)),
        )
        none = GalaxyCatalog(np.zeros((0, 3)), *[np.zeros(0)] * 4)
        save_catalogs(staging / CATALOGS_FILE, tiled, none, mass_definition="M200c")
    return root


def slab_once(args: argparse.Namespace, slab: int) -> dict:
    """Paint slab ``slab`` of ``args.slabs`` (in this process); return the measurements."""
    from dm2gal.io.store import FieldStore
    from dm2gal.paint.pipeline import PaintOptions
    from dm2gal.paint.slabs import paint_slab
    from dm2gal.paint.sources import MockSource

    universe = mock(args.grid, args.ratio, args.cache)
    model = untrained_model(universe, universe.build())
    root = tiled_store(args.grid, args.ratio, args.factor, args.cache)
    source = MockSource(root, subhalo_mass="M200c", progress=False)
    options = PaintOptions(samples=args.samples, min_mass=1e8, progress=False)
    start, cpu = time.perf_counter(), time.process_time()
    paint_slab(model, source, args.out, args.slabs, slab, options)
    wall = time.perf_counter() - start
    grid = FieldStore(root).grid
    return {
        "slab": slab,
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "voxels": grid**3 / args.slabs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, default=256, help="side of the tiled mock")
    parser.add_argument("--ratio", type=int, default=4, help="voxels per particle spacing")
    parser.add_argument("--factor", type=int, default=4, help="copies per side")
    parser.add_argument("--slabs", type=int, default=16)
    parser.add_argument("--run", type=int, nargs="+", default=[0, 1], help="slabs to paint")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("data/mock"))
    parser.add_argument("--out", type=Path, default=Path("data/bench_slabs/painted"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the measured subprocess
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(slab_once(args, args.one)))
        return
    root = tiled_store(args.grid, args.ratio, args.factor, args.cache)  # not timed
    side = args.grid * args.factor
    print(f"{side}^3 ({root}) in {args.slabs} x-slabs, {args.samples} draws:\n")
    print("| slab | wall [s] | CPU [s] | peak RSS [GiB] | voxels/s |")
    print("|---:|---:|---:|---:|---:|")
    for slab in args.run:
        result = subprocess.run(
            [sys.executable, __file__, "--one", str(slab), *sys.argv[1:]],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {slab} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{r['voxels'] / r['wall_s']:.3g} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
