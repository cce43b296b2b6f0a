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

from dm2gal.errors import ConfigError, integer_option
from dm2gal.infer.calibration import calibrate_store_field
from dm2gal.infer.catalog import field_galaxies, write_galaxy_catalog
from dm2gal.infer.exported import TrainedModel
from dm2gal.infer.naming import PredictionNames, draw_seeds
from dm2gal.infer.parameters import bound_values
from dm2gal.infer.predict import PredictOptions, predict_store
from dm2gal.io.gravity_fields import TRACERS_FILE, Tracers
from dm2gal.io.recipe import SimInfo
from dm2gal.io.store import FieldStore, atomic_write_text, field_bytes, staged_dir
from dm2gal.paint.sources import GravitySource
from dm2gal.paint.trust import TrustOptions, differences, paint_grid, redshift_warning

log = logging.getLogger(__name__)

SUMMARY_FILE = "paint.json"
CATALOG_DIR = "catalogs"


@dataclass(frozen=True)
class PaintOptions:
    """``samples`` draws from seeds ``seed .. seed + samples - 1``; output fields named
    ``<name>_mean`` etc.; catalogue galaxies of at least ``min_mass`` Msun/h, placed by
    ``assignment`` (:func:`dm2gal.infer.catalog.field_galaxies`); ``tile`` /
    ``batch_size`` override the model's prediction settings; ``trust`` the comparison with
    the training run."""

    samples: int = 0
    seed: int = 0
    name: str = "stellar"
    min_mass: float = 0.0
    assignment: str = "share"
    tile: int | None = None
    batch_size: int | None = None
    trust: TrustOptions = field(default_factory=TrustOptions)
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("samples", "seed"):  # frozen: an integral 2.0 is stored as 2
            object.__setattr__(self, key, integer_option(getattr(self, key), key, minimum=0))
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
    calibrated mean (:class:`~dm2gal.infer.naming.PredictionNames`)."""
    names = PredictionNames(name, samples)
    return [names.mean, *names.draws] + ([names.calibrated] if calibrated else [])


def check_source(
    model: TrainedModel, source: GravitySource, trust: TrustOptions
) -> tuple[SimInfo, int, list[str]]:
    """Compare ``source``'s run with the model's training run: the grid to paint on and the
    warnings (:mod:`dm2gal.paint.trust`); a run outside the network's range raises."""
    info = source.info()
    grid = paint_grid(model.recipe, info, trust.voxel_tolerance)
    warnings = redshift_warning(model.recipe, info, trust)
    subhalo_mass = source.with_grid(grid).subhalo_definition()
    warnings += differences(model.recipe, info, subhalo_mass, bound_values(model.net))
    return info, grid, warnings


@dataclass
class Painting:
    """One painting's plan, shared by the one-process and the slab paths: the checked source
    on its grid, the seeds, the output fields and the prediction settings."""

    model: TrainedModel
    source: GravitySource
    out: Path
    options: PaintOptions
    info: SimInfo
    grid: int
    warnings: list[str]
    start: float

    @classmethod
    def plan(
        cls, model: TrainedModel, source: GravitySource, out: str | Path, options: PaintOptions
    ) -> Painting:
        """Check the source against the model (raising before anything is written)."""
        start = time.perf_counter()
        if options.samples and not model.probabilistic:
            raise ConfigError(
                f"samples={options.samples}: {type(model.net).__name__} is deterministic and "
                "gives no draws (train with model=probabilistic, or samples=0)"
            )
        info, grid, warnings = check_source(model, source, options.trust)
        for warning in warnings:
            log.warning(warning)
        return cls(model, source.with_grid(grid), Path(out), options, info, grid, warnings, start)

    @property
    def seeds(self) -> list[int]:
        return draw_seeds(self.options.seed, self.options.samples)

    @property
    def names(self) -> list[str]:
        calibrated = self.model.calibration is not None
        return output_fields(self.options.name, self.options.samples, calibrated)

    @property
    def inputs(self) -> list[str]:
        return list(self.model.recipe.fields.inputs)

    @property
    def disk_bytes(self) -> int:
        """Disk bytes of the input and painted fields: checked free before painting starts."""
        return field_bytes(self.grid, len(self.inputs) + len(self.names))

    def predict_options(self) -> PredictOptions:
        """The model's prediction settings (its draw copula included), with the options' tile
        and batch size."""
        return PredictOptions(
            tile=self.options.tile or self.model.options.tile,
            batch_size=self.options.batch_size or self.model.options.batch_size,
            channels_last=self.model.options.channels_last,
            progress=self.options.progress,
            copula=self.model.options.copula,
        )

    def field_attrs(self) -> dict[str, Any]:
        """What every predicted field records beside the prediction's own metadata."""
        return {
            "source": str(self.out.resolve()),
            "model": self.model.provenance,
            "paint_warnings": self.warnings,
        }

    def finish(self, store: FieldStore) -> PaintSummary:
        """Calibrate the mean, write the catalogues and ``paint.json`` into ``store`` (the
        staging directory holding the input fields, the tracers and the predicted fields)."""
        model, options, names = self.model, self.options, self.names
        if model.calibration is not None:
            calibrate_store_field(store, names[0], model.calibration, names[-1])
        tracers = Tracers.load(store.root / TRACERS_FILE)
        provenance = {"model": model.provenance, "source": type(self.source).__name__}
        counts, totals = {}, {}
        for name in tqdm(names, desc="catalogues", unit="field", disable=not options.progress):
            painted = store.read(name, mmap=False)
            galaxies, dropped = field_galaxies(
                painted, store.box, tracers, options.min_mass, options.assignment
            )
            seed = store.field_meta(name).get("seed")
            totals[name] = float(painted.sum(dtype=np.float64))
            write_galaxy_catalog(
                store.root / CATALOG_DIR / f"{name}.h5",
                galaxies.pos,
                galaxies.mstar,
                galaxies.vel,
                galaxies.host,
                field=name,
                seed=-1 if seed is None else seed,
                source=json.dumps({**provenance, "files": store.meta()["attrs"]["files"]}),
                model=json.dumps(model.provenance),
                recipe=json.dumps(model.recipe.to_dict()),
                min_mass=options.min_mass,
                assignment=options.assignment,
                mass_left_out=dropped,
                field_mass=totals[name],
            )
            counts[name] = len(galaxies)
        summary = PaintSummary(
            out=str(self.out.resolve()),
            box=self.info.box,
            grid=self.grid,
            voxel=self.info.box / self.grid,
            trained_voxel=model.recipe.voxel_size,
            fields=names,
            galaxies=counts,
            total_mstar=totals,
            warnings=self.warnings,
            seconds=time.perf_counter() - self.start,
        )
        record = {
            "summary": asdict(summary),
            "recipe": model.recipe.to_dict(),
            "sim": asdict(self.info),
            "provenance": provenance,
            "seeds": self.seeds,
        }
        atomic_write_text(store.root / SUMMARY_FILE, json.dumps(record, indent=2, default=str))
        return summary


def paint_run(
    model: TrainedModel,
    source: GravitySource,
    out: str | Path,
    options: PaintOptions = PaintOptions(),
) -> PaintSummary:
    """Paint ``source``'s gravity-only run with ``model`` into ``out`` in this process (see
    the module; :mod:`dm2gal.paint.slabs` paints it in x-slabs)."""
    painting = Painting.plan(model, source, out, options)
    with staged_dir(out, nbytes=painting.disk_bytes) as staging:
        store = FieldStore(staging)
        painting.source.write(store, painting.source.fingerprint())
        predict_store(
            model.net,
            model.transform,
            store,
            painting.inputs,
            staging,
            options.name,
            painting.field_attrs(),
            options=painting.predict_options(),
            seeds=painting.seeds,
        )
        return painting.finish(store)


def read_summary(out: str | Path) -> dict[str, Any]:
    """The ``paint.json`` of a painting."""
    return json.loads((Path(out) / SUMMARY_FILE).read_text())
