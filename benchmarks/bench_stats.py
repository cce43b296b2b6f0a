"""Time P(k) and the bispectrum set: Pylians (threads) vs the torch path (CPU, and CUDA if present).

The bispectrum set is every configured (k1, k2) pair at ``--angles`` angles (default: the two
default pairs x 10 angles = 20 triangles). Pylians gets one ``Bk`` call per pair (all angles at
once, its fastest use) and, for the per-triangle comparison, the time per triangle is also given.
The torch bispectrum is timed cold (caches cleared before each call: mode tables and triangle
counts are rebuilt, as for the first field of a set) and warm (counts cached, as for every
further field measured with the same set: model, truth, HODs). The last column is Pylians' time
per triangle over the row's. Usage: ``python benchmarks/bench_stats.py --grids 128 256
--threads 2``; on a GPU machine without Pylians: ``--grids 512 --devices cuda --no-pylians``.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dm2gal.io.store import atomic_write_text
from dm2gal.stats import base
from dm2gal.stats import pylians as stats
from dm2gal.stats.torch_backend import bispectrum_torch, clear_caches, power_spectrum_torch


def timed(fn: Callable[[], object], repeat: int, sync: Callable[[], None] = lambda: None) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call, in seconds."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grids", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--box", type=float, default=75.0, help="box side in Mpc/h")
    parser.add_argument("--threads", type=int, default=2, help="Pylians / torch CPU threads")
    parser.add_argument("--angles", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-pylians-bk", action="store_true", help="Pylians Bk is slow")
    parser.add_argument("--no-pylians", action="store_true", help="torch rows only")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    thetas = np.linspace(0.0, np.pi, args.angles)
    pairs = base.DEFAULT_K_PAIRS
    triangles = [(k1, k2, t) for k1, k2 in pairs for t in thetas]
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    rows = []
    for n in args.grids:
        rng = np.random.default_rng(0)
        field = rng.gamma(2.0, 1e9, size=(n, n, n)).astype(np.float32)
        if not args.no_pylians:
            t = timed(
                lambda f=field: stats.power_spectrum(f, args.box, threads=args.threads),
                args.repeat,
            )
            rows.append((n, f"Pylians ({args.threads} thr)", "P(k)", t))
        if not (args.skip_pylians_bk or args.no_pylians):
            t = timed(
                lambda f=field: [
                    stats.bispectrum(f, args.box, k1, k2, thetas, threads=args.threads)
                    for k1, k2 in pairs
                ],
                repeat=1,
            )
            rows.append((n, f"Pylians ({args.threads} thr)", "Bk set", t))
        for device in devices:
            x = torch.from_numpy(field).to(device)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            name = f"torch {device}" + (f" ({args.threads} thr)" if device == "cpu" else "")
            t = timed(lambda x=x: power_spectrum_torch(x, args.box), args.repeat, sync)
            rows.append((n, name, "P(k)", t))
            t = timed(
                lambda x=x: (clear_caches(), bispectrum_torch(x, args.box, triangles)),
                args.repeat,
                sync,
            )
            rows.append((n, name, "Bk set cold", t))
            t = timed(lambda x=x: bispectrum_torch(x, args.box, triangles), args.repeat, sync)
            rows.append((n, name, "Bk set warm", t))

    title = f"box {args.box} Mpc/h, Bk set = {len(pairs)} (k1,k2) pairs {pairs}"
    title += f" x {args.angles} angles"
    print(title)
    columns = [
        "grid",
        "implementation",
        "statistic",
        "time [s]",
        "per triangle [ms]",
        "speed-up vs Pylians per triangle",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|---:|---|---|---:|---:|---:|")
    pylians_bk = {
        n: t for n, impl, what, t in rows if impl.startswith("Pylians") and what == "Bk set"
    }
    table = []
    for n, impl, what, t in rows:
        bk = what.startswith("Bk set")
        per = f"{1e3 * t / len(triangles):.2f}" if bk else ""
        speedup = f"{pylians_bk[n] / t:.1f}x" if bk and n in pylians_bk else ""
        cells = [f"{n}^3", impl, what, f"{t:.4f}", per, speedup]
        print("| " + " | ".join(cells) + " |")
        table.append(dict(zip(columns, cells, strict=True)))
    if args.json:
        atomic_write_text(args.json, json.dumps({"title": title, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
