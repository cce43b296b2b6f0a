"""Paint a gravity-only run: input fields -> mean, draws (calibrated mean) -> galaxy catalogues.

Stages: compare the run with the network's training run (:mod:`dm2gal.paint.trust`: grid from
the voxel size, redshift, cosmology), build the input fields by the training recipe
(:mod:`dm2gal.paint.sources`), predict the mean and ``samples`` seeded draws of the whole box
(:func:`dm2gal.infer.predict.predict_store`), calibrate the mean where the model has a
calibration, and turn every painted field into a galaxy catalogue
(:func:`dm2gal.infer.catalog.field_galaxies`). Everything is written into a staging directory
renamed onto ``out`` when complete, so a failure leaves nothing under ``out``'s name.

Output ``out/``: a field store (``dm``, ``subhalo``, ``<name>_mean``, ``<name>_draw_<i>``,
``<name>_mean_calibrated``) with ``tracers.h5``, ``catalogs/<field>.h5`` and ``paint.json``
(model, source, recipe, warnings, summary).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dm2gal.errors import ConfigError
from dm2gal.infer.calibration import calibrate_store_field
from dm2gal.infer.catalog import field_galaxies, write_galaxy_catalog
from dm2gal.infer.exported import TrainedModel
from dm2gal.infer.predict import PredictOptions, predict_store
from dm2gal.io.gravity_fields import TRACERS_FILE, Tracers
from dm2gal.io.recipe import SimInfo
from dm2gal.io.store import FieldStore, atomic_write_text, staged_dir
from dm2gal.paint.sources import GravitySource
from dm2gal.paint.trust import TrustOptions, differences, paint_grid, redshift_warning

log = logging.getLogger(__name__)

SUMMARY_FILE = "paint.json"
CATALOG_DIR = "catalogs"


@dataclass(frozen=True)
class PaintOptions:
    """``samples`` draws from seeds ``seed .. seed + samples - 1``; output fields named
    ``<name>_mean`` etc.; catalogue galaxies of at least ``min_mass`` Msun/h; ``tile`` /
    ``batch_size`` override the model's prediction settings; ``trust`` the comparison with
    the training run."""

    samples: int = 0
    seed: int = 0
    name: str = "stellar"
    min_mass: float = 0.0
    tile: int | None = None
    batch_size: int | None = None
    trust: TrustOptions = field(default_factory=TrustOptions)
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 0:
            raise ConfigError(f"samples: expected the number of draws (>= 0), got {self.samples!r}")
        if not self.min_mass >= 0:
            raise ConfigError(f"catalog_min_mass: expected >= 0 Msun/h, got {self.min_mass!r}")


@dataclass
class PaintSummary:
    """What a painting produced (box and voxel in Mpc/h, masses in Msun/h, time in s)."""

    out: str
    box: float
    grid: int
    voxel: float
    trained_voxel: float
    fields: list[str]
    galaxies: dict[str, int]
    total_mstar: dict[str, float]
    warnings: list[str]
    seconds: float

    def table(self) -> str:
        """The end-of-run summary, one line per painted field."""
        lines = [
            f"painted {self.out}: box {self.box:g} Mpc/h, grid {self.grid}^3, voxel "
            f"{self.voxel:.5g} Mpc/h (trained {self.trained_voxel:.5g}), {self.seconds:.1f} s",
            f"{'field':<28} {'galaxies':>10} {'total M* [Msun/h]':>18}",
        ]
        for name in self.fields:
            lines.append(f"{name:<28} {self.galaxies[name]:>10d} {self.total_mstar[name]:>18.4e}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def output_fields(name: str, samples: int, calibrated: bool) -> list[str]:
    """The painted fields' names: the mean (``name`` alone without draws), the draws and the
    calibrated mean."""
    mean = f"{name}_mean" if samples else name
    return (
        [mean]
        + [f"{name}_draw_{i}" for i in range(samples)]
        + ([f"{mean}_calibrated"] if calibrated else [])
    )


def check_source(
    model: TrainedModel, source: GravitySource, trust: TrustOptions
) -> tuple[SimInfo, int, list[str]]:
    """Compare ``source``'s run with the model's training run: the grid to paint on and the
    warnings (:mod:`dm2gal.paint.trust`); a run outside the network's range raises."""
    info = source.info()
    grid = paint_grid(model.recipe, info, trust.voxel_tolerance)
    warnings = redshift_warning(model.recipe, info, trust)
    warnings += differences(model.recipe, info, source.with_grid(grid).subhalo_definition())
    return info, grid, warnings


def paint_run(
    model: TrainedModel,
    source: GravitySource,
    out: str | Path,
    options: PaintOptions = PaintOptions(),
) -> PaintSummary:
    """Paint ``source``'s gravity-only run with ``model`` into ``out`` (see the module)."""
    start = time.perf_counter()
    if options.samples and not model.probabilistic:
        raise ConfigError(
            f"samples={options.samples}: {type(model.net).__name__} is deterministic and gives "
            "no draws (train with model=probabilistic, or samples=0)"
        )
    info, grid, warnings = check_source(model, source, options.trust)
    for warning in warnings:
        log.warning(warning)
    recipe = model.recipe
    source = source.with_grid(grid)
    seeds = list(range(options.seed, options.seed + options.samples))
    names = output_fields(options.name, options.samples, model.calibration is not None)
    predict = PredictOptions(
        tile=options.tile or model.options.tile,
        batch_size=options.batch_size or model.options.batch_size,
        channels_last=model.options.channels_last,
        progress=options.progress,
    )
    provenance = {"model": model.provenance, "source": type(source).__name__}
    with staged_dir(out) as staging:
        store = FieldStore(staging)
        source.write(store, source.fingerprint())
        predict_store(
            model.net,
            model.transform,
            store,
            list(recipe.fields.inputs),
            staging,
            options.name,
            {"model": model.provenance, "paint_warnings": warnings},
            options=predict,
            seeds=seeds,
        )
        if model.calibration is not None:
            calibrate_store_field(store, names[0], model.calibration, names[-1])
        tracers = Tracers.load(staging / TRACERS_FILE)
        counts, totals = {}, {}
        for name in tqdm(names, desc="catalogues", unit="field", disable=not options.progress):
            painted = store.read(name, mmap=False)
            galaxies, dropped = field_galaxies(painted, store.box, tracers, options.min_mass)
            seed = store.field_meta(name).get("seed")
            write_galaxy_catalog(
                staging / CATALOG_DIR / f"{name}.h5",
                galaxies.pos,
                galaxies.mstar,
                galaxies.vel,
                galaxies.host,
                field=name,
                seed=-1 if seed is None else seed,
                source=json.dumps({**provenance, "files": store.meta()["attrs"]["files"]}),
                model=json.dumps(model.provenance),
                recipe=json.dumps(recipe.to_dict()),
                min_mass=options.min_mass,
                mass_left_out=dropped,
                field_mass=float(painted.sum(dtype=np.float64)),
            )
            counts[name] = len(galaxies)
            totals[name] = float(painted.sum(dtype=np.float64))
        summary = PaintSummary(
            out=str(Path(out).resolve()),
            box=info.box,
            grid=grid,
            voxel=info.box / grid,
            trained_voxel=recipe.voxel_size,
            fields=names,
            galaxies=counts,
            total_mstar=totals,
            warnings=warnings,
            seconds=time.perf_counter() - start,
        )
        record = {
            "summary": asdict(summary),
            "recipe": recipe.to_dict(),
            "sim": asdict(info),
            "provenance": provenance,
            "seeds": seeds,
        }
        atomic_write_text(staging / SUMMARY_FILE, json.dumps(record, indent=2, default=str))
    return summary


def read_summary(out: str | Path) -> dict[str, Any]:
    """The ``paint.json`` of a painting."""
    return json.loads((Path(out) / SUMMARY_FILE).read_text())
