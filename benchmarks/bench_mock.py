"""Mock universe generation: time, peak memory and P(k) accuracy against a converged run.

For each size (particles^3 in a box of side L) and seed, mocks are built with the same
initial conditions, each in a fresh subprocess (so each peak RSS is its own) with an empty
cache: the default (20 FastPM steps on a 2x mesh + PGD), a cheaper one (10 steps + PGD), 40
steps + PGD, the higher-accuracy setting ``accurate`` (40 steps on a 4x mesh + PGD:
``data.source.steps=40 data.source.pm_factor=4``) and the converged reference
(``--ref-steps`` steps on a ``--ref-pm``-times finer mesh, no PGD). The DM field (CIC,
grid = particles) gives P(k); the tables print P / P_converged mode-weighted in quarters of
the particle Nyquist wavenumber k_N, per seed and mean +- std over seeds. ``--convergence``
adds, on the first seed, the reference against one with twice the steps and one with a mesh
one step finer (how converged the reference is). ``--results DIR`` keeps each run's P(k) and
timings as JSON there and reuses them, so an interrupted benchmark resumes where it stopped. Usage::

    python benchmarks/bench_mock.py                          # 64^3/32 and 128^3/75, 4 seeds
    python benchmarks/bench_mock.py --sizes 64:32 --seeds 1 2
    python benchmarks/bench_mock.py --sizes 128:75 --ref-steps 50 --ref-pm 3 --convergence \
        --results /tmp/mock_runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "default": {},
    "steps 10": {"steps": 10},
    "steps 40": {"steps": 40},
    "accurate": {"steps": 40, "pm_factor": 4},
}
BAND_HEADER = "0-1/4 k_N | 1/4-1/2 k_N | 1/2-3/4 k_N | 3/4-1 k_N"


def reference(steps: int, pm_factor: int) -> dict:
    """Settings of a plain FastPM run (no PGD)."""
    return {"steps": steps, "pm_factor": pm_factor, "pgd": False}


def run(particles: int, box: float, seed: int, settings: dict, cache_dir: str) -> dict:
    """Build one mock; return wall and CPU time (s), peak RSS (MiB) and the P(k) of its DM."""
    import Pk_library as PKL

    from dm2gal.sim import MockUniverse

    load = os.getloadavg()[0]
    start = time.perf_counter()
    src = MockUniverse(
        box=box, particles=particles, grid=particles, seed=seed, cache_dir=cache_dir, **settings
    )
    dm = src.build().read("dm", mmap=False)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    delta = (dm / dm.mean(dtype=np.float64) - 1.0).astype(np.float32)
    pk = PKL.Pk(delta, box, 0, "CIC", 1, False)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # includes imports (~2 s)
        "load": [load, os.getloadavg()[0]],
        "rss_mib": usage.ru_maxrss / 1024.0,  # Linux: KiB
        "k": pk.k3D.tolist(),
        "p": pk.Pk[:, 0].tolist(),
        "modes": pk.Nmodes3D.tolist(),
    }


def bands(result: dict, ref: dict, k_nyquist: float) -> list[float]:
    """Mode-weighted ``P / P_ref`` in quarters of ``k_nyquist``."""
    k, modes = np.array(result["k"]), np.array(result["modes"])
    p, p_ref = np.array(result["p"]), np.array(ref["p"])
    edges = k_nyquist * np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (k > lo) & (k <= hi)
        out.append(float(np.sum(modes[sel] * p[sel]) / np.sum(modes[sel] * p_ref[sel])))
    return out


def child(particles: int, box: float, seed: int, settings: dict, results: Path | None) -> dict:
    """One run in a fresh subprocess, or its stored result from ``results``."""
    name = "_".join(f"{k}{v}" for k, v in sorted(settings.items())) or "default"
    path = results / f"{particles}_{box:g}_{seed}_{name}.json" if results else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    cmd = [sys.executable, __file__, "--child", json.dumps([particles, box, seed, settings])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    return result


def cells(ratios: np.ndarray) -> str:
    return " | ".join(f"{r:.3f}" for r in ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64:32", "128:75"], help="particles:box")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--ref-steps", type=int, default=100)
    parser.add_argument("--ref-pm", type=int, default=4)
    parser.add_argument("--convergence", action="store_true", help="check the reference")
    parser.add_argument("--results", type=Path, help="directory keeping each run's result")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        particles, box, seed, settings = json.loads(args.child)
        with tempfile.TemporaryDirectory() as cache:
            print(json.dumps(run(particles, box, seed, settings, cache)))
        return

    ref = reference(args.ref_steps, args.ref_pm)
    print(
        f"Mock generation and P(k) / P_converged (converged: {args.ref_steps} steps, "
        f"pm_factor {args.ref_pm}, no PGD; seeds {args.seeds}). Times: wall (CPU = user + sys) "
        "per run, mean over seeds; load: 1-min load average at the start of the runs.\n"
    )
    print(f"| particles / box | setting | seed | wall (CPU) [s] | load | peak RSS [MiB] | "
          f"{BAND_HEADER} |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        particles, box = int(size.split(":")[0]), float(size.split(":")[1])
        k_nyquist = np.pi * particles / box
        label = f"{particles}³ / {box:g} Mpc/h"
        refs = [child(particles, box, seed, ref, args.results) for seed in args.seeds]
        for name in args.settings:
            runs = [child(particles, box, s, SETTINGS[name], args.results) for s in args.seeds]
            ratios = np.array([bands(r, rr, k_nyquist) for r, rr in zip(runs, refs, strict=True)])
            for seed, r, row in zip(args.seeds, runs, ratios, strict=True):
                times = f"{r['wall_s']:.1f} ({r['cpu_s']:.1f})"
                print(f"| {label} | {name} | {seed} | {times} | {r['load'][0]:.1f} | "
                      f"{r['rss_mib']:.0f} | {cells(row)} |")  # fmt: skip
            spread = " | ".join(
                f"{m:.3f} ± {s:.3f}" for m, s in zip(ratios.mean(0), ratios.std(0), strict=True)
            )
            wall = np.mean([r["wall_s"] for r in runs])
            cpu = np.mean([r["cpu_s"] for r in runs])
            rss = max(r["rss_mib"] for r in runs)
            print(f"| {label} | **{name}** | mean ± std | {wall:.1f} ({cpu:.1f}) | | {rss:.0f} "
                  f"| {spread} |")  # fmt: skip
        times = f"{np.mean([r['wall_s'] for r in refs]):.1f} ({np.mean([r['cpu_s'] for r in refs]):.1f})"  # noqa: E501
        print(f"| {label} | converged | all | {times} | | {max(r['rss_mib'] for r in refs):.0f} "
              "| 1 | 1 | 1 | 1 |")  # fmt: skip
        if args.convergence:
            seed = args.seeds[0]
            print(f"\nConvergence of the reference ({label}, seed {seed}): P_ref / P_other\n")
            print(f"| reference | other | {BAND_HEADER} |\n|---|---|---|---|---|---|")
            for other in (
                reference(2 * args.ref_steps, args.ref_pm),
                reference(args.ref_steps, args.ref_pm + 1),
            ):
                result = child(particles, box, seed, other, args.results)
                row = bands(refs[0], result, k_nyquist)
                print(f"| {args.ref_steps} steps, pm {args.ref_pm} | {other['steps']} steps, "
                      f"pm {other['pm_factor']} | {cells(row)} |")  # fmt: skip
            print()


if __name__ == "__main__":
    main()
