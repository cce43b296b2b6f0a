"""How much halo-mass and environment knowledge the mean field needs.

For unseen mock boxes the hosts are rebuilt exactly as :class:`dm2gal.sim.mock.MockUniverse`
builds them (gravity-only run, FoF, M200c, environment); the galaxy model's exact mean
(:func:`dm2gal.sim.galaxies.oracle_mean`) is then painted with degraded knowledge: halo masses
with log-normal errors of s dex, the environment with normal errors (env_std units), measured
on another scale (regressed onto the true one), or not at all. Each is scored against the
stored truth (r(k) per band, Pylians) and its 1 - r^2 divided by the exact oracle's.

    python docs/results/scripts/oracle_knowledge.py boxes <data_dir>/mock 1000 1001 1002 > o.jsonl
    python docs/results/scripts/oracle_knowledge.py table o.jsonl
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from dm2gal.io.paint import paint
from dm2gal.io.store import FieldStore
from dm2gal.sim.cosmology import RHO_CRIT
from dm2gal.sim.fof import friends_of_friends
from dm2gal.sim.galaxies import Hosts, environment_residual, oracle_mean, smoothed_log_density
from dm2gal.sim.mock import MockUniverse
from dm2gal.sim.so import m200c, spherical_overdensity
from dm2gal.stats.bands import band_scores, default_bands
from dm2gal.stats.pylians import cross_power

MASS_ERRORS = (0.05, 0.1, 0.2, 0.3)  # dex
ENV_ERRORS = (0.3, 0.6, 1.0)  # env_std units
OTHER_RADII = (1.0, 4.0)  # Mpc/h (the galaxy model's is 2)


def hosts_of(mock: MockUniverse) -> tuple[Hosts, np.ndarray]:
    """The mock's hosts and its DM mass grid, rebuilt as the mock builds them."""
    pos = mock.simulate()
    dm = paint(pos, mock.particle_mass, mock.grid, mock.box)
    link = mock.linking_b * mock.box / mock.particles
    groups = friends_of_friends(pos, mock.box, link, min_members=mock.min_halo_particles)
    so = spherical_overdensity(
        pos, mock.box, groups.labels, groups.size, mock.particle_mass, 200.0 * RHO_CRIT
    )
    cell = mock.box / (mock.pm_factor * mock.particles)
    mass = m200c(so, groups.size * mock.particle_mass, mock.cosmo, 3.0 * cell)
    model = mock.galaxy_model
    log_env = smoothed_log_density(dm, mock.box, model.env_radius, so.centre)
    env = environment_residual(np.log10(mass), log_env, model)
    return Hosts(so.centre, mass, groups.members(), pos, env), dm


def regressed_env(dm: np.ndarray, mock: MockUniverse, hosts: Hosts, radius: float) -> np.ndarray:
    """The best linear prediction of the true environment from log M and the log density
    smoothed on ``radius`` Mpc/h: what a model seeing only that scale could know."""
    other = smoothed_log_density(dm, mock.box, radius, hosts.pos)
    design = np.column_stack([np.ones(len(hosts)), np.log10(hosts.mass), other])
    coef, *_ = np.linalg.lstsq(design, hosts.env, rcond=None)
    return design @ coef


def variants(hosts: Hosts, dm: np.ndarray, mock: MockUniverse, seed: int) -> dict[str, Hosts]:
    """Every degraded knowledge of the hosts, by name."""
    rng = np.random.default_rng(seed)
    n = len(hosts)
    out = {"exact": hosts, "no_env": replace(hosts, env=np.zeros(n))}
    for s in MASS_ERRORS:
        out[f"mass_{s}dex"] = replace(hosts, mass=hosts.mass * 10.0 ** rng.normal(0.0, s, n))
    for s in ENV_ERRORS:
        out[f"env_error_{s}"] = replace(hosts, env=hosts.env + rng.normal(0.0, s, n))
    for r in OTHER_RADII:
        out[f"env_at_R{r}"] = replace(hosts, env=regressed_env(dm, mock, hosts, r))
    return out


def score_boxes(cache_dir: str, seeds: list[int]) -> None:
    """Print one JSON line per box: each variant's band scores and total against the truth."""
    base = MockUniverse(cache_dir=cache_dir)
    for seed in seeds:
        mock = base.realisation(seed)
        mock.build()
        truth = FieldStore(mock.store_dir).read("stellar")
        hosts, dm = hosts_of(mock)
        physics = {
            "min_sub_mass": mock.min_halo_particles * mock.particle_mass,
            "h": mock.cosmo.h,
            "model": mock.galaxy_model,
        }
        bands = default_bands(mock.box, mock.grid)
        out: dict = {"seed": seed}
        for name, known in variants(hosts, dm, mock, seed).items():
            field = paint(*oracle_mean(known, **physics), mock.grid, mock.box)
            xp = cross_power(field, truth, mock.box)
            out[name] = band_scores(xp.k, xp.pk_a / xp.pk_b, xp.r, bands)
            out[name]["total_ratio"] = float(field.sum() / truth.sum())
        print(json.dumps(out), flush=True)


def table(path: str) -> None:
    """The Markdown table: per variant, 1 - r^2 over the exact oracle's, mean +- s.e."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    names = [k for k, v in rows[0].items() if isinstance(v, dict)]
    print("| oracle mean knowing | boxes | 1-r² ratio k<=1 | 1-r² ratio intermediate | total |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        cells = []
        for band in ("large", "intermediate"):
            key = f"decorrelation_{band}"
            ratio = np.array([r[name][key] / r["exact"][key] for r in rows])
            cells.append(f"{ratio.mean():.2f} ± {ratio.std(ddof=1) / np.sqrt(len(ratio)):.2f}")
        total = np.mean([r[name]["total_ratio"] for r in rows])
        print(f"| {name} | {len(rows)} | {cells[0]} | {cells[1]} | {total:.3f} |")


if __name__ == "__main__":
    if sys.argv[1] == "boxes":
        score_boxes(sys.argv[2], [int(s) for s in sys.argv[3:]])
    else:
        table(sys.argv[2])
