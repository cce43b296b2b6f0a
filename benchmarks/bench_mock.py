"""Mock universe generation: time, peak memory and P(k) accuracy against a converged run.

For each size (particles^3 in a box of side L) and seed, mocks are built with the same
initial conditions, each in a fresh subprocess (so each peak RSS is its own) with an empty
cache: the default (20 FastPM steps + PGD), a cheaper one (10 steps + PGD), a higher-accuracy
one (40 steps + PGD) and the converged reference (``--ref-steps`` steps on a ``--ref-pm``-times
finer mesh, no PGD). The DM field (CIC, grid = particles) gives P(k); the table prints
P / P_converged mode-weighted in quarters of the particle Nyquist wavenumber k_N, mean +- std
over seeds. Usage::

    python benchmarks/bench_mock.py                          # 64^3/32 and 128^3/75, 4 seeds
    python benchmarks/bench_mock.py --sizes 64:32 --seeds 1 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SETTINGS = {
    "default": {},
    "steps 10": {"steps": 10},
    "steps 40": {"steps": 40},
    "converged": None,  # filled from --ref-steps / --ref-pm
}


def run(particles: int, box: float, seed: int, settings: dict, cache_dir: str) -> dict:
    """Build one mock; return wall time (s), peak RSS (MiB) and the P(k) of its DM field."""
    import Pk_library as PKL

    from dm2gal.sim import MockUniverse

    start = time.perf_counter()
    src = MockUniverse(
        box=box, particles=particles, grid=particles, seed=seed, cache_dir=cache_dir, **settings
    )
    dm = src.build().read("dm", mmap=False)
    wall = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    delta = (dm / dm.mean(dtype=np.float64) - 1.0).astype(np.float32)
    pk = PKL.Pk(delta, box, 0, "CIC", 1, False)
    return {
        "wall_s": wall,
        "rss_mib": rss_mib,
        "k": pk.k3D.tolist(),
        "p": pk.Pk[:, 0].tolist(),
        "modes": pk.Nmodes3D.tolist(),
    }


def bands(result: dict, reference: dict, k_nyquist: float) -> list[float]:
    """Mode-weighted ``P / P_ref`` in quarters of ``k_nyquist``."""
    k, modes = np.array(result["k"]), np.array(result["modes"])
    p, p_ref = np.array(result["p"]), np.array(reference["p"])
    edges = k_nyquist * np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (k > lo) & (k <= hi)
        out.append(float(np.sum(modes[sel] * p[sel]) / np.sum(modes[sel] * p_ref[sel])))
    return out


def child(particles: int, box: float, seed: int, settings: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([particles, box, seed, settings])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64:32", "128:75"], help="particles:box")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--ref-steps", type=int, default=100)
    parser.add_argument("--ref-pm", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        particles, box, seed, settings = json.loads(args.child)
        with tempfile.TemporaryDirectory() as cache:
            print(json.dumps(run(particles, box, seed, settings, cache)))
        return

    settings = dict(SETTINGS)
    settings["converged"] = {"steps": args.ref_steps, "pm_factor": args.ref_pm, "pgd": False}
    print(
        f"Mock generation and P(k) / P_converged (converged: {args.ref_steps} steps, "
        f"pm_factor {args.ref_pm}, no PGD; seeds {args.seeds}; mean +- std over seeds)\n"
    )
    print("| particles / box | setting | time [s] | peak RSS [MiB] | 0-1/4 k_N | 1/4-1/2 k_N "
          "| 1/2-3/4 k_N | 3/4-1 k_N |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        particles, box = int(size.split(":")[0]), float(size.split(":")[1])
        k_nyquist = np.pi * particles / box
        results = {
            name: [child(particles, box, seed, opts) for seed in args.seeds]
            for name, opts in settings.items()
        }
        for name, runs in results.items():
            ratios = np.array(
                [
                    bands(r, ref, k_nyquist)
                    for r, ref in zip(runs, results["converged"], strict=True)
                ]
            )
            cells = " | ".join(
                f"{m:.3f} ± {s:.3f}" for m, s in zip(ratios.mean(0), ratios.std(0), strict=True)
            )
            wall = np.mean([r["wall_s"] for r in runs])
            rss = max(r["rss_mib"] for r in runs)
            print(f"| {particles}³ / {box:g} Mpc/h | {name} | {wall:.1f} | {rss:.0f} | {cells} |")


if __name__ == "__main__":
    main()
