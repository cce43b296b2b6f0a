"""Wall time and peak RSS of generating the mock universe at several sizes.

Each size runs in a fresh subprocess (so each peak RSS is its own) with an empty cache
directory, in a 75 Mpc/h box with as many grid cells as particles per side. Usage::

    python benchmarks/bench_mock.py                # 32^3, 64^3 and the default 128^3
    python benchmarks/bench_mock.py --sizes 32 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def run(particles: int, box: float, cache_dir: str) -> dict[str, float]:
    """Generate one mock; return wall time (s), peak RSS (MiB) and its halo/galaxy counts."""
    from dm2gal.io.catalog import CATALOGS_FILE, load_catalogs
    from dm2gal.sim import MockUniverse

    start = time.perf_counter()
    src = MockUniverse(box=box, particles=particles, grid=particles, seed=42, cache_dir=cache_dir)
    src.build()
    wall = time.perf_counter() - start
    halos, galaxies = load_catalogs(src.store_dir / CATALOGS_FILE)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return {"wall_s": wall, "rss_mib": rss_mib, "halos": len(halos), "galaxies": len(galaxies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--box", type=float, default=75.0, help="box side, Mpc/h")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as cache:
            print(json.dumps(run(args.child, args.box, cache)))
        return

    print(f"mock universe generation, box {args.box:g} Mpc/h, grid = particles per side")
    print(f"{'particles':>10} {'wall [s]':>9} {'peak RSS [MiB]':>15} {'halos':>7} {'galaxies':>9}")
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--box", str(args.box)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{n:>8}^3 {r['wall_s']:>9.1f} {r['rss_mib']:>15.0f} "
            f"{r['halos']:>7d} {r['galaxies']:>9d}"
        )


if __name__ == "__main__":
    main()
