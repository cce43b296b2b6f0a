"""``python -m dm2gal.paint.compare model=<mock-trained run | exported model> seeds=[...]
out=<dir>``: painted galaxy catalogues against the mock's true galaxies and the HOD on unseen
mock universes.

Each seed is a further mock universe of the model's training settings (built into
``cache_dir``), painted from its gravity-only files (:func:`dm2gal.paint.pipeline.paint_run`).
On each box, the catalogue statistics (:mod:`dm2gal.paint.statistics`) of the true galaxies,
the painted mean's and draws' catalogues and the run's HODs (fitted on the whole training box,
sampled on the box's halos and environment) are measured; ``out/catalog_stats.md`` and
``.json`` give their mean +- std over the boxes (a box's draws averaged first).
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
from dm2gal.infer.catalog import read_galaxy_catalog
from dm2gal.io.store import atomic_write_text
from dm2gal.paint.model import load_model
from dm2gal.paint.pipeline import CATALOG_DIR, PaintOptions, paint_run
from dm2gal.paint.sources import MockSource
from dm2gal.paint.statistics import StatBins, correlation, multipoles, stellar_mass_function
from dm2gal.sim import MockUniverse

#: the catalogues compared on every box, before the run's HODs (``hod_<name>``)
KINDS = ("truth", "model_mean", "model_draw")


def measure(pos, mstar, vel, box: float, bins: StatBins) -> dict[str, Any]:
    """SMF, xi(r) and (with velocities) the redshift-space monopole and quadrupole."""
    out = {
        "smf": stellar_mass_function(mstar, box, bins),
        "xi": correlation(pos, mstar, box, bins),
    }
    poles = multipoles(pos, vel, mstar, box, bins)
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
    out = Path(cfg.out)
    fields = model.recipe.to_dict()["fields"]
    per_box: dict[str, list[dict[str, Any]]] = {kind: [] for kind in (*KINDS, *hods)}
    for seed in cfg.seeds:
        mock: MockUniverse = instantiate(source, seed=seed, cache_dir=cfg.cache_dir)
        store = mock.build()
        box_halos, truth = mock.catalogs()
        nan = np.full((len(truth), 3), np.nan)
        per_box["truth"].append(measure(truth.pos, truth.mstar, nan, box, bins))
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
            measured.append(measure(cat.pos, cat.mstar, cat.vel, box, bins))
        per_box["model_mean"].append(measured[0])
        per_box["model_draw"].append(mean_of(measured[1 : 1 + cfg.samples]))
        box_env = Environment([store.read(DM_FIELD)], box)
        for kind, hod in hods.items():
            draws = []
            for draw in range(max(1, cfg.samples)):
                pos, mstar = hod.sample(box_halos, 1000 * seed + draw, box, env=box_env)
                draws.append(measure(pos, mstar, np.full((len(mstar), 3), np.nan), box, bins))
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


def markdown(table: dict[str, Any], bins: StatBins, seeds: list[int]) -> str:
    """The SMF and xi(r) tables (mean ± std over the boxes) in Markdown."""
    kinds = [k for k in table if k not in ("smf_log10_mstar", "r_edges")]
    header = "| {} | " + " | ".join(kinds) + " |"
    rule = "|---:|" + "---:|" * len(kinds)
    edges = table["smf_log10_mstar"]
    lines = [
        f"Stellar-mass function dn/dlog10 M* [(Mpc/h)^-3 dex^-1], mean ± std over {len(seeds)} "
        f"unseen boxes (seeds {seeds}):",
        "",
        header.format("log10 M* [Msun/h]"),
        rule,
    ]
    for i in range(len(edges) - 1):
        cells = " | ".join(_cell(table[k]["smf"], i, ".2e") for k in kinds)
        lines.append(f"| {edges[i]:.2f}-{edges[i + 1]:.2f} | {cells} |")
    r = np.sqrt(np.array(table["r_edges"][:-1]) * np.array(table["r_edges"][1:]))
    lines += ["", f"Real-space xi(r) of galaxies with M* > {bins.mass_cut:.0e} Msun/h:", "",
              header.format("r [Mpc/h]"), rule]  # fmt: skip
    for i, radius in enumerate(r):
        cells = " | ".join(_cell(table[k]["xi"], i, ".3f") for k in kinds)
        lines.append(f"| {radius:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


@hydra.main(version_base="1.3", config_path="../../conf/paint", config_name="compare")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()
