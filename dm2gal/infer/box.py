"""A trained run's prediction of a whole box into a field store (what ``python -m
dm2gal.predict`` does): the tile and batch size (an explicit tile the network must take; the
run's own setting rounded as in its evaluation), the draws' seeds, the fields' names and the
calibrated mean."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dm2gal.data.transforms import FieldTransform
from dm2gal.infer.calibration import CALIBRATION_FILE, QuantileMap, calibrate_store_field
from dm2gal.infer.copula import COPULA_FILE, CopulaKernel
from dm2gal.infer.naming import PredictionNames, draw_seeds
from dm2gal.infer.predict import DEFAULT_TILE, PredictOptions, check_tile, predict_store, tile_size
from dm2gal.io.store import FieldStore
from dm2gal.models.base import FieldNet

#: the folders of a train run that its prediction and its evaluation write
PREDICTION_DIR, EVALUATION_DIR = "prediction", "evaluation"


def run_copula(run_dir: Path) -> CopulaKernel | None:
    """The draw copula the run's evaluation fitted (``evaluation.draw_correlation: fitted``),
    else None: draws independent per voxel."""
    path = run_dir / EVALUATION_DIR / COPULA_FILE
    return CopulaKernel.load(path) if path.is_file() else None


def run_options(
    net: FieldNet,
    evaluation: Mapping[str, Any],
    channels_last: bool,
    tile: int | None = None,
    batch_size: int | None = None,
) -> PredictOptions:
    """The prediction options of a run's network: an explicit ``tile`` must be one it takes
    (never rounded); else the run's ``evaluation`` settings' tile, rounded as in its evaluation
    (:func:`~dm2gal.infer.predict.tile_size`), and batch size unless ``batch_size``."""
    if tile is not None:
        tile = check_tile(net, tile)
    else:
        tile = tile_size(net, evaluation.get("tile", DEFAULT_TILE))
    if batch_size is None:
        batch_size = evaluation.get("batch_size", PredictOptions.batch_size)
    return PredictOptions(tile=tile, batch_size=batch_size, channels_last=channels_last)


@dataclass(frozen=True)
class RunNetwork:
    """A train run's network with what a prediction needs: its normalisation, input fields,
    training voxel size (Mpc/h), the run's evaluation settings (tile, batch size) and memory
    layout, and where it comes from."""

    net: FieldNet
    transform: FieldTransform
    inputs: list[str]
    voxel_size: float | None
    evaluation: Mapping[str, Any]
    channels_last: bool
    run_dir: Path
    checkpoint: Path


@dataclass(frozen=True)
class BoxRequest:
    """A whole-box prediction (defaults: ``conf/predict.yaml``): the output store ``out``
    (None: the run's ``prediction/``), field ``name``, ``samples`` draws from seeds ``seed``,
    ``seed + 1``, ..., ``tile`` and ``batch_size`` (None: the run's), and the calibration
    table (None: the run's ``evaluation/calibration.csv`` when present)."""

    out: str | None
    name: str
    samples: int
    seed: int
    tile: int | None
    batch_size: int | None
    calibration: str | None
    seeds: list[int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", draw_seeds(self.seed, self.samples))

    @property
    def names(self) -> PredictionNames:
        return PredictionNames(self.name, len(self.seeds))

    def calibration_table(self, run_dir: Path) -> Path | None:
        """The table that calibrates the mean: the one asked for, else the run's if it has
        one."""
        if self.calibration is not None:
            return Path(self.calibration)
        table = run_dir / EVALUATION_DIR / CALIBRATION_FILE
        return table if table.is_file() else None


@dataclass(frozen=True)
class BoxPrediction:
    """What a whole-box prediction wrote: ``store``'s fields (mean, draws by seed, calibrated
    mean) from ``checkpoint``, calibrated by ``calibration``."""

    store: FieldStore
    checkpoint: Path
    mean: str
    draws: dict[str, int]
    calibrated: str | None = None
    calibration: Path | None = None

    def report(self) -> list[str]:
        """One line per written field."""
        lines = [f"wrote {self.store.path(self.mean)} (checkpoint {self.checkpoint})"]
        lines += [f"wrote {self.store.path(d)} (seed {seed})" for d, seed in self.draws.items()]
        if self.calibrated:
            lines.append(
                f"wrote {self.store.path(self.calibrated)} (calibration {self.calibration})"
            )
        return lines


def calibrate_mean(store: FieldStore, mean: str, table: Path, calibrated: str) -> None:
    """Write ``calibrated``: field ``mean`` of ``store`` through the quantile map ``table``."""
    quantiles = QuantileMap.load(table)
    calibrate_store_field(store, mean, quantiles, calibrated, calibration=str(table.resolve()))


def predict_box(network: RunNetwork, source: FieldStore, request: BoxRequest) -> BoxPrediction:
    """Predict ``source``'s whole box (a field store holding the network's input fields) as
    ``request`` asks, with the run and checkpoint in the fields' metadata, the draws
    correlated by the run's copula where it has one, and calibrate the mean where there is a
    table."""
    copula = run_copula(network.run_dir)
    options = run_options(
        network.net, network.evaluation, network.channels_last, request.tile, request.batch_size
    )
    options = replace(options, copula=copula)
    provenance = {
        "run_dir": str(network.run_dir.resolve()),
        "checkpoint": str(network.checkpoint.resolve()),
        "draw_copula": None if copula is None else copula.to_dict(),
    }
    store = predict_store(
        network.net,
        network.transform,
        source,
        network.inputs,
        request.out or network.run_dir / PREDICTION_DIR,
        request.name,
        provenance,
        voxel_size=network.voxel_size,
        options=options,
        seeds=request.seeds,
    )
    names = request.names
    result = BoxPrediction(
        store, network.checkpoint, names.mean, dict(zip(names.draws, request.seeds, strict=True))
    )
    table = request.calibration_table(network.run_dir)
    if table is None:
        return result
    calibrate_mean(store, names.mean, table, names.calibrated)
    return replace(result, calibrated=names.calibrated, calibration=table)
