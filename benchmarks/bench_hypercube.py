"""The cost of a hypercube of mock universes (``data=mock_lh``): generation per universe and
in total, and reading it back from the cache.

Composes ``data=mock_lh`` (plus any ``--override``), builds its training universes into an
empty cache (``--cache``, default a temporary directory) ``--workers`` at a time, and prints a
Markdown table: per universe the wall and CPU seconds of its build (CPU: all its threads), the
total wall time of the hypercube, the time to open it again from the cache, the data module's
set-up over all universes (pooled normalisation, anchors and the mass-bin sampler's crop
statistics; a model's context of 8 voxels), disk per universe, and the load average (a shared
machine inflates wall times; CPU seconds are the steadier figure). Usage::

    python benchmarks/bench_hypercube.py                               # the default: 16 universes
    python benchmarks/bench_hypercube.py --workers 1 --override data.source.n_universes=4
    python benchmarks/bench_hypercube.py --override experiment=smoke    # the smoke hypercube
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from dm2gal.sim.hypercube import build_universes
from dm2gal.train.build import compose_train, data_module_config


def directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override")
    parser.add_argument("--cache", default=None, help="an empty cache directory (default: temp)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache or tmp)
        cfg = compose_train(["data=mock_lh", *args.override])
        source = data_module_config(cfg.data).source
        cube = instantiate(source, universe={"cache_dir": str(cache)}, progress=False)
        universes = cube.training_universes()
        u, cores = source.universe, len(os.sched_getaffinity(0))
        workers = args.workers or cores
        print(
            f"{len(universes)} universes of {u.particles}^3 particles, {u.grid}^3 grid, "
            f"{u.box} Mpc/h, {u.steps} PM steps; {workers} workers on {cores} cores\n"
        )
        print("| quantity | value |\n| --- | --- |")
        load = os.getloadavg()[0]
        start = time.perf_counter()
        times = build_universes(universes, workers, progress=False)
        total = time.perf_counter() - start
        wall = np.array([t.wall for t in times.values()])
        cpu = np.array([t.cpu for t in times.values()])
        print(f"| build wall per universe (s) | {wall.mean():.1f} +- {wall.std():.1f} |")
        print(f"| build CPU per universe (s) | {cpu.mean():.1f} +- {cpu.std():.1f} |")
        print(f"| hypercube wall, {workers} workers (s) | {total:.1f} |")
        print(f"| hypercube CPU (s) | {cpu.sum():.1f} |", flush=True)
        start = time.perf_counter()
        cube.stores()
        print(f"| open again from the cache (s) | {time.perf_counter() - start:.2f} |")
        disk = np.mean([directory_bytes(x.store_dir) for x in universes]) / 2**20
        print(f"| disk per universe (MiB) | {disk:.1f} |", flush=True)
        datamodule = instantiate(
            data_module_config(cfg.data), source=cube, context=8, sampler=instantiate(cfg.sampler)
        )
        start = time.perf_counter()
        datamodule.setup("fit")
        setup = time.perf_counter() - start
        print(f"| data module set-up, {len(datamodule.stat)} training anchors (s) | {setup:.1f} |")
        print(f"| load average (start, end) | {load:.1f}, {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    main()
