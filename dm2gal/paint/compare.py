"""``python -m dm2gal.paint.compare model=<mock-trained run | exported model> seeds=[...]
out=<dir>``: painted galaxy catalogues against the mock's true galaxies and the HOD on unseen
mock universes.

Each seed is a further mock universe of the model's training settings (built into
``cache_dir``), painted from its gravity-only files (:func:`dm2gal.paint.pipeline.paint_run`).
On each box, the catalogue statistics (:mod:`dm2gal.paint.statistics`) of the true galaxies,
the painted mean's and draws' catalogues and the run's HODs (fitted on the whole training box,
sampled on the box's halos and environment) are measured; ``out/catalog_stats.md`` and
``.json`` give their mean +- std over the boxes (a box's draws averaged first). Velocities for
the redshift-space multipoles (z = 0, z line of sight): the truth's own (a central moves with
its halo, a satellite with its particle: :mod:`dm2gal.sim.galaxies`), the painted catalogues'
(their (sub)halo's, :mod:`dm2gal.infer.catalog`) and, for the HODs' galaxies, which carry none,
the nearest halo's (a central sits on its halo's centre).
Options: ``conf/paint/compare.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.errors import ConfigError
from dm2gal.hod.environment import DM_FIELD, Environment
from dm2gal.infer.catalog import nearest_velocities, read_galaxy_catalog
from dm2gal.io.store import atomic_write_text
from dm2gal.paint.model import load_model
from dm2gal.paint.pipeline import CATALOG_DIR, PaintOptions, paint_run
from dm2gal.paint.sources import MockSource
from dm2gal.paint.statistics import (
    StatBins,
    correlation,
    multipoles,
    rsd_scale,
    stellar_mass_function,
)
from dm2gal.sim import MockUniverse

#: the catalogues compared on every box, before the run's HODs (``hod_<name>``)
KINDS = ("truth", "model_mean", "model_draw")


#: the statistics in the table, with their titles (``{cut}``: the mass cut)
STATISTICS = {
    "xi": "Real-space xi(r) of galaxies with M* > {cut} Msun/h",
    "xi0": "Redshift-space monopole xi_0(s) of galaxies with M* > {cut} Msun/h",
    "xi2": "Redshift-space quadrupole xi_2(s) of galaxies with M* > {cut} Msun/h",
}


def measure(pos, mstar, vel, box: float, bins: StatBins, scale: float) -> dict[str, Any]:
    """SMF, xi(r) and (with velocities; ``scale`` Mpc/h per km/s, :func:`rsd_scale`) the
    redshift-space monopole and quadrupole."""
    out = {
        "smf": stellar_mass_function(mstar, box, bins),
        "xi": correlation(pos, mstar, box, bins),
    }
    poles = multipoles(pos, vel, mstar, box, bins, scale)
    if poles is not None:
        out["xi0"], out["xi2"] = poles
    return out


def mean_of(results: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The per-statistic mean of several measurements (a box's draws)."""
    keys = set.intersection(*(set(r) for r in results))
    return {k: np.mean([r[k] for r in results], axis=0) for k in keys}


def compare(cfg: DictConfig) -> Path:
    """Paint ``cfg.seeds`` unseen mocks and write the statistics table; return its path."""
    model = load_model(cfg.model, cfg.ckpt_path, cfg.trust_checkpoint)
    source = dict(model.card.get("training_data", {}).get("source") or {})
    if source.get("_target_") != "dm2gal.sim.MockUniverse":
        raise ConfigError(f"model={cfg.model}: needs a run trained on the mock universe")
    training: MockUniverse = instantiate(source)
    if training.seed in cfg.seeds:
        raise ConfigError(f"seeds: {list(cfg.seeds)} include the training seed {training.seed}")
    halos, galaxies = training.catalogs()
    box = training.box
    env = Environment([training.build().read(DM_FIELD)], box)
    anywhere = lambda pos: np.zeros(len(pos), dtype=bool)  # noqa: E731
    known = model.card.get("hods") or {}
    names = list(known) if cfg.hods is None else list(cfg.hods)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"hods: {unknown} are not HODs of the run (it has {sorted(known)})")
    hods = {
        f"hod_{name}": instantiate(known[name]).fit(halos, galaxies, anywhere, box, env=env)
        for name in names
    }
    bins = StatBins(**cfg.bins)
    if not bins.r_max < box / 3:  # halotools' periodic pair counter searches below L/3
        raise ConfigError(f"bins.r_max: {bins.r_max} Mpc/h, must be below box/3 = {box / 3:.3g}")
    scale = rsd_scale(0.0, training.cosmo.Om0)  # the mock is at z = 0
    out = Path(cfg.out)
    fields = model.recipe.to_dict()["fields"]
    per_box: dict[str, list[dict[str, Any]]] = {kind: [] for kind in (*KINDS, *hods)}
    for seed in cfg.seeds:
        mock: MockUniverse = instantiate(source, seed=seed, cache_dir=cfg.cache_dir)
        store = mock.build()
        box_halos, truth = mock.catalogs()
        per_box["truth"].append(measure(truth.pos, truth.mstar, truth.vel, box, bins, scale))
        painted = out / f"seed{seed}"
        gravity = MockSource(store.root, mas=fields["mas"], subhalo_mass=fields["subhalo_mass"],
                             progress=cfg.progress)  # fmt: skip
        options = PaintOptions(
            samples=cfg.samples,
            min_mass=cfg.catalog_min_mass,
            assignment=cfg.catalog_assignment,
            progress=cfg.progress,
        )
        summary = paint_run(model, gravity, painted, options)
        measured = []
        for name in summary.fields:
            cat, _ = read_galaxy_catalog(painted / CATALOG_DIR / f"{name}.h5")
            measured.append(measure(cat.pos, cat.mstar, cat.vel, box, bins, scale))
        per_box["model_mean"].append(measured[0])
        per_box["model_draw"].append(mean_of(measured[1 : 1 + cfg.samples]))
        box_env = Environment([store.read(DM_FIELD)], box)
        for kind, hod in hods.items():
            draws = []
            for draw in range(max(1, cfg.samples)):
                pos, mstar = hod.sample(box_halos, 1000 * seed + draw, box, env=box_env)
                vel = nearest_velocities(pos, box_halos.pos, box_halos.vel, box)
                draws.append(measure(pos, mstar, vel, box, bins, scale))
            per_box[kind].append(mean_of(draws))
    table = summarise(per_box, bins)
    atomic_write_text(out / "catalog_stats.json", json.dumps(table, indent=2))
    path = out / "catalog_stats.md"
    atomic_write_text(path, markdown(table, bins, list(cfg.seeds)))
    print(path.read_text())
    return path


def summarise(per_box: dict[str, list[dict[str, Any]]], bins: StatBins) -> dict[str, Any]:
    """Mean and std over boxes of every statistic of every kind."""
    table: dict[str, Any] = {
        "smf_log10_mstar": bins.smf_edges().tolist(),
        "r_edges": bins.r_edges().tolist(),
    }
    for kind, boxes in per_box.items():
        if not boxes or any(not b for b in boxes):
            continue
        keys = set.intersection(*(set(b) for b in boxes))
        table[kind] = {
            k: {
                "mean": np.mean([b[k] for b in boxes], axis=0).tolist(),
                "std": np.std(
                    [b[k] for b in boxes], axis=0, ddof=1 if len(boxes) > 1 else 0
                ).tolist(),
            }
            for k in sorted(keys)
        }
    return table


def _cell(stat: dict[str, list[float]], i: int, fmt: str) -> str:
    return f"{stat['mean'][i]:{fmt}} ± {stat['std'][i]:{fmt}}"


def _rows(
    table: dict[str, Any], stat: str, title: str, column: str, rows: list[str], fmt: str
) -> list[str]:
    """One Markdown table of ``stat`` (mean ± std) per kind, a row per entry of ``rows``."""
    kinds = [k for k in table if isinstance(table[k], dict) and stat in table[k]]
    if not kinds:
        return []
    lines = [f"{title}:", "", f"| {column} | " + " | ".join(kinds) + " |",
             "|---:|" + "---:|" * len(kinds)]  # fmt: skip
    for i, row in enumerate(rows):
        lines.append(
            f"| {row} | " + " | ".join(_cell(table[k][stat], i, fmt) for k in kinds) + " |"
        )
    return lines + [""]


def markdown(table: dict[str, Any], bins: StatBins, seeds: list[int]) -> str:
    """The SMF, xi(r) and (where measured) multipole tables, mean ± std over the boxes."""
    edges = table["smf_log10_mstar"]
    smf_rows = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    title = (f"Stellar-mass function dn/dlog10 M* [(Mpc/h)^-3 dex^-1], mean ± std over "
             f"{len(seeds)} unseen boxes (seeds {seeds})")  # fmt: skip
    lines = _rows(table, "smf", title, "log10 M* [Msun/h]", smf_rows, ".2e")
    r = np.sqrt(np.array(table["r_edges"][:-1]) * np.array(table["r_edges"][1:]))
    for stat, title in STATISTICS.items():
        column = "r [Mpc/h]" if stat == "xi" else "s [Mpc/h]"
        lines += _rows(table, stat, title.format(cut=f"{bins.mass_cut:.0e}"), column,
                       [f"{x:.2f}" for x in r], ".3f")  # fmt: skip
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../../conf/paint", config_name="compare")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()
