"""Streamed CIC painter vs one Pylians call on the same particles: throughput and peak RSS.

Writes a multi-file TNG-layout snapshot (float64 kpc/h coordinates, DM mass in MassTable) of
``--particles`` particles, then paints it onto ``--grid``^3 in two fresh subprocesses (so each
peak RSS is its own):

- ``streamed``: :func:`dm2gal.io.paint.paint_field`, chunk by chunk, into a memory-mapped store
  field;
- ``pylians``: read every particle into memory, then one ``MAS_library.MA`` call, then store it.

Both times include reading the files. Usage::

    python benchmarks/bench_paint.py --particles 2e7 --grid 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BOX_KPC = 75_000.0
MASS = 0.05  # 1e10 Msun/h


def write(directory: Path, n: int, n_files: int, seed: int = 0) -> None:
    """Write ``n`` uniform DM particles as ``snapdir_099`` with ``n_files`` chunks."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tng_layout import write_snapshot

    pos = np.random.default_rng(seed).uniform(0, BOX_KPC, (n, 3))
    write_snapshot(directory, 99, {1: {"Coordinates": pos}}, box_kpc=BOX_KPC,
                   mass_table=[0, MASS, 0, 0, 0, 0], n_files=n_files, empty=None)  # fmt: skip


def run(mode: str, directory: Path, grid: int, chunk_rows: int) -> dict[str, float]:
    """Paint the snapshot in ``directory`` with ``mode``; return timings and peak RSS."""
    import MAS_library as masl

    from dm2gal.io.gadget import Snapshot
    from dm2gal.io.paint import paint_field
    from dm2gal.io.store import FieldStore

    base = _status_mib("VmRSS")
    start = time.perf_counter()
    snap = Snapshot.find(directory, 99, chunk_rows)
    store = FieldStore(directory / f"store_{mode}")
    store.init(snap.box, grid)
    if mode == "streamed":
        chunks = ((c.pos, c.mass) for c in snap.particles(1))
        _, n = paint_field(store, "dm", chunks, n_chunks=snap.n_chunks(1), progress=False)
        paint_s = float("nan")
    else:
        parts = list(snap.particles(1))
        pos = np.concatenate([c.pos for c in parts]).astype(np.float32)
        weights = np.full(len(pos), parts[0].mass, np.float32)
        del parts
        field = np.zeros((grid,) * 3, np.float32)
        t0 = time.perf_counter()
        masl.MA(pos, field, float(snap.box), "CIC", W=weights, verbose=False)
        paint_s = time.perf_counter() - t0
        n = len(pos)
        store.write("dm", field)
    wall = time.perf_counter() - start
    total = float(store.read("dm").sum(dtype=np.float64))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    rss = _status_mib("VmHWM")
    return {"n": n, "wall_s": wall, "paint_s": paint_s, "rss_mib": rss, "base_mib": base,
            "total": total}  # fmt: skip


def _status_mib(key: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (Linux), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no '{key}' (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=float, default=2e7)
    parser.add_argument("--grid", type=int, default=256)
    parser.add_argument("--files", type=int, default=8, help="snapshot chunk files")
    parser.add_argument("--chunk-rows", type=int, default=1 << 21)
    parser.add_argument("--mode", choices=["streamed", "pylians"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # child process
        print(json.dumps(run(args.mode, args.dir, args.grid, args.chunk_rows)))
        return
    n = int(args.particles)
    with tempfile.TemporaryDirectory(prefix="bench_paint_") as tmp:
        write(Path(tmp), n, args.files)
        rows = {}
        for mode in ("pylians", "streamed"):
            cmd = [sys.executable, __file__, "--mode", mode, "--dir", tmp, "--grid",
                   str(args.grid), "--chunk-rows", str(args.chunk_rows)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[mode] = json.loads(out.strip().splitlines()[-1])
    expected = n * MASS * 1e10
    grid_mib = args.grid**3 * 4 / 2**20
    print(f"{n:.3g} particles in {args.files} files -> {args.grid}^3 grid ({grid_mib:.0f} MiB), "
          f"chunks of {args.chunk_rows} rows; times include reading the files")  # fmt: skip
    print("| painter  | wall s | Mparticles/s | MA-only s | peak RSS MiB | above imports MiB "
          "| mass error |")  # fmt: skip
    print("|----------|-------:|-------------:|----------:|-------------:|------------------:"
          "|-----------:|")  # fmt: skip
    for mode, r in rows.items():
        r["above"] = r["rss_mib"] - r["base_mib"]
        print(f"| {mode:8s} | {r['wall_s']:6.2f} | {r['n'] / r['wall_s'] / 1e6:12.2f} | "
              f"{r['paint_s']:9.2f} | {r['rss_mib']:12.0f} | {r['above']:17.0f} | "
              f"{r['total'] / expected - 1:10.1e} |")  # fmt: skip
    ratio = rows["pylians"]["wall_s"] / rows["streamed"]["wall_s"]
    memory = rows["streamed"]["above"] / rows["pylians"]["above"]
    print(f"streamed / pylians: throughput {ratio:.2f}x, peak RSS above imports {memory:.2f}x")


if __name__ == "__main__":
    main()
