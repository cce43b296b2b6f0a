"""The whole painting pipeline on a mock universe: input fields + prediction + catalogues.

For each ``--grid`` N, a mock universe of N/``--ratio`` particles per side (default 2) in a box
of N * 75/128 Mpc/h (the default mock's voxel) is generated once (not timed), then painted in a
fresh subprocess
(so each peak RSS is its own) by the default probabilistic network (untrained weights: the
cost does not depend on them) with ``--samples`` draws: :func:`dm2gal.paint.pipeline.paint_run`
from the mock's gravity-only files to the catalogues. Prints a Markdown table: wall time, CPU
time, peak RSS and voxels per second, and the catalogue step alone: the mean's catalogue built
again after painting, its wall time and its own peak (the process's peak RSS reset first through
``/proc/self/clear_refs``, Linux; the RSS it started from subtracted). Usage::

    python benchmarks/bench_paint_pipeline.py --grid 64 128 256 --samples 2
    python benchmarks/bench_paint_pipeline.py --grid 512 --ratio 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOXEL = 75.0 / 128


def mock(grid: int, ratio: int, cache: Path):
    from dm2gal.sim import MockUniverse

    particles = grid // ratio
    return MockUniverse(box=grid * VOXEL, particles=particles, grid=grid, seed=1, cache_dir=cache)


def rss_gib(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` (peak) of this process from ``/proc/self/status``, GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 2**20
    raise KeyError(key)


def catalog_once(out: Path, name: str) -> dict:
    """Build the catalogue of the painted field ``name`` of ``out`` again (as
    :func:`dm2gal.paint.pipeline.paint_run` does: the field read into memory) and measure it."""
    from dm2gal.infer.catalog import field_galaxies
    from dm2gal.io.gravity_fields import TRACERS_FILE, Tracers
    from dm2gal.io.store import FieldStore

    store = FieldStore(out)
    tracers = Tracers.load(out / TRACERS_FILE)
    field = store.read(name, mmap=False)
    start_rss = rss_gib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    field_galaxies(field, store.box, tracers, min_mass=1e8)
    return {
        "catalog_s": time.perf_counter() - start,
        "catalog_extra_gib": rss_gib("VmHWM") - start_rss,
    }


def untrained_model(universe, store):
    """The default probabilistic network (16 channels, seeded untrained weights: the cost does
    not depend on them) with the mock's recipe, as a painting model."""
    import torch

    from dm2gal.data.transforms import FieldTransform
    from dm2gal.infer.exported import TrainedModel
    from dm2gal.infer.predict import PredictOptions
    from dm2gal.infer.recipe import mock_recipe
    from dm2gal.models import ProbabilisticNet

    torch.manual_seed(0)
    net = ProbabilisticNet(in_channels=2, channels=16, levels=1, convs=2, components=2)
    transform = FieldTransform([9.0, 9.0], [2.0, 2.0], 1.0, 2.0, log=True, target_max=1e12)
    net.set_target_transform(transform)
    return TrainedModel(
        net=net.eval(),
        architecture={},
        transform=transform,
        recipe=mock_recipe(universe, store, ["dm", "subhalo"]),
        options=PredictOptions(tile=32, batch_size=4, progress=False),
    )


def paint_once(grid: int, ratio: int, cache: Path, out: Path, samples: int) -> dict:
    """Paint the mock of side ``grid`` (in this process); return the measurements."""
    from dm2gal.paint.pipeline import PaintOptions, paint_run
    from dm2gal.paint.sources import MockSource

    universe = mock(grid, ratio, cache)
    store = universe.build()
    model = untrained_model(universe, store)
    source = MockSource(store.root, subhalo_mass="M200c", progress=False)
    start, cpu = time.perf_counter(), time.process_time()
    summary = paint_run(model, source, out, PaintOptions(samples=samples, min_mass=1e8,
                                                         progress=False))  # fmt: skip
    wall = time.perf_counter() - start
    return {
        "grid": grid,
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "voxels_per_s": grid**3 / wall,
        "galaxies_mean": summary.galaxies[summary.fields[0]],
        **catalog_once(out, summary.fields[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--ratio", type=int, default=2, help="voxels per particle spacing")
    parser.add_argument("--cache", type=Path, default=Path("data/mock"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the measured subprocess
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            print(json.dumps(paint_once(args.one, args.ratio, args.cache, out, args.samples)))
        return
    print(
        "| grid | wall [s] | CPU [s] | peak RSS [GiB] | voxels/s | galaxies (mean) | "
        "catalogue [s] | catalogue peak above start [GiB] |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for grid in args.grid:
        mock(grid, args.ratio, args.cache).build()  # generated once, outside the measurement
        result = subprocess.run(
            [sys.executable, __file__, "--one", str(grid), "--samples", str(args.samples),
             "--ratio", str(args.ratio), "--cache", str(args.cache)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {grid}^3 | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{r['voxels_per_s']:.3g} | {r['galaxies_mean']} | {r['catalog_s']:.1f} | "
              f"{r['catalog_extra_gib']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
