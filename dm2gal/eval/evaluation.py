"""Held-out evaluation: predict the test region, paint the HOD benchmarks, write the report.

Artefacts go to ``<out_dir>/evaluation/``: a field store with the truth, the prediction and each
HOD field on the test region (with metadata), ``metrics.json``, CSV tables and PNG plots, and
``hods.json`` (the fitted HODs' parameters). A mock
source adds its oracle fields (``oracle_mean``, ``oracle_draw``) as rows beside them. With
``realisations`` > 0 (or ``stores``) the run is also scored on whole boxes it never saw
(:mod:`dm2gal.eval.realisations`: ``realisations.json`` / ``.md``, mean +- std plots). The
settings are one object, :class:`EvaluationSettings` (the ``evaluation`` config group).

A deterministic network's prediction is the row ``model``. A probabilistic network (one with
``infer_draws``, ``model=probabilistic``) has no ``model`` row: its mean field is ``model_mean``
(the best r(k); ``model_calibrated`` is its calibration) and ``evaluation.draws`` seeded draws
(seeds ``seed + i``, from the same forward passes) are the random field ``model_draw``, whose
every score is the mean over the draws, with their spread in the ``draws`` block of
``metrics.json`` (:mod:`dm2gal.eval.report`) and as ``model_draw/<metric>/std`` in the
returned metrics; the same on every realisation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dm2gal import __version__
from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.errors import ConfigError, integer_option
from dm2gal.eval.realisations import (
    evaluate_realisations,
    mock_realisations,
    network_fields,
    whole_box,
)
from dm2gal.eval.references import fit_hods, oracle_fields, paint_hods
from dm2gal.eval.report import ReportOptions, write_report
from dm2gal.eval.wandb_tables import log_evaluation
from dm2gal.hod import HOD
from dm2gal.infer.box import EVALUATION_DIR
from dm2gal.infer.calibration import CALIBRATION_FILE, QuantileMap, fit_calibration
from dm2gal.infer.copula import COPULA_FILE, CopulaKernel
from dm2gal.infer.copula_fit import fit_region_copula
from dm2gal.infer.naming import draw_seeds
from dm2gal.infer.parameters import bind_parameters
from dm2gal.infer.predict import DEFAULT_TILE, PredictOptions, default_device, predict_fields
from dm2gal.io.store import FieldStore, atomic_write_text, staged_dir
from dm2gal.train.loggers import find_wandb, wandb_logger
from dm2gal.train.runs import find_runs, load_run

log = logging.getLogger(__name__)
#: the fitted parameters of the HODs in a run's evaluation folder (EVALUATION_DIR)
HOD_PARAMS_FILE = "hods.json"
#: how a probabilistic network's draws are correlated (EvaluationSettings.draw_correlation)
DRAW_CORRELATIONS = ("none", "fitted")


@dataclass(frozen=True)
class EvaluationSettings:
    """The ``evaluation`` config group (``conf/evaluation/default.yaml``).

    ``tile`` / ``batch_size``: prediction tiles (voxels per side) and tiles per pass;
    ``min_mass``: also score only voxels whose true M* exceeds it (Msun/h; None: whole field
    only); ``calibration_voxels``: about this many voxels of whole-box slabs are predicted to fit
    a quantile calibration on their training-region voxels (0: off); ``report``: how the report
    measures (:class:`ReportOptions`); ``realisations``: further mock universes (seeds
    ``realisation_seed + i``) on which the run is scored whole-box, and ``stores``: field stores
    scored the same way (paths); ``hod_draws``: HOD draws painted per realisation; ``draws``:
    seeded draws of a probabilistic network scored as ``model_draw`` (0: its mean only; a
    deterministic network ignores it); ``draw_correlation``: ``fitted``, the draws correlated
    by a copula fitted on the validation region with a kernel of ``copula_radius`` voxels
    (:mod:`dm2gal.infer.copula`, saved as ``copula.json``), or ``none``, independent per voxel.
    """

    tile: int = DEFAULT_TILE
    batch_size: int = 4
    min_mass: float | None = None
    calibration_voxels: int = 0
    report: ReportOptions = dataclasses.field(default_factory=ReportOptions)
    realisations: int = 0
    realisation_seed: int = 1000
    hod_draws: int = 3
    stores: tuple[str, ...] = ()
    draws: int = 4
    draw_correlation: str = "none"
    copula_radius: int = 2

    def __post_init__(self) -> None:
        for key, minimum in (
            ("calibration_voxels", 0),
            ("realisations", 0),
            ("realisation_seed", 0),
            ("hod_draws", 1),
            ("draws", 0),
            ("copula_radius", 1),
        ):
            value = integer_option(getattr(self, key), f"evaluation.{key}", minimum)
            object.__setattr__(self, key, value)  # frozen: an integral 2.0 is stored as 2
        if self.draw_correlation not in DRAW_CORRELATIONS:
            raise ConfigError(
                f"evaluation.draw_correlation: expected one of {DRAW_CORRELATIONS}, got "
                f"{self.draw_correlation!r}"
            )
        if isinstance(self.stores, str) or not all(isinstance(x, str) for x in self.stores):
            raise ConfigError(f"evaluation.stores must be a list of paths, got {self.stores!r}")
        if self.min_mass is not None and not self.min_mass > 0:
            raise ConfigError(
                f"evaluation.min_mass must be > 0 Msun/h or null, got {self.min_mass}"
            )

    @classmethod
    def from_config(cls, node: Mapping | None) -> EvaluationSettings:
        """Settings from an ``evaluation`` config node (missing keys take the defaults)."""
        values = (
            OmegaConf.to_container(node, resolve=True)
            if isinstance(node, DictConfig)
            else dict(node or {})
        )
        report = values.pop("report", None) or {}
        if "k_pairs" in report:
            report["k_pairs"] = tuple(tuple(pair) for pair in report["k_pairs"])
        if isinstance(values.get("stores"), list):
            values["stores"] = tuple(values["stores"])
        try:
            return cls(**values, report=ReportOptions(**report))
        except TypeError as err:
            raise ConfigError(f"evaluation: unknown or missing setting ({err})") from err

    def predict_options(self, channels_last: bool = False, progress: bool = True) -> PredictOptions:
        return PredictOptions(self.tile, self.batch_size, channels_last, progress=progress)


def fit_draw_copula(
    net: Any, datamodule: Any, settings: EvaluationSettings, out_dir: Path
) -> CopulaKernel | None:
    """With ``draw_correlation: fitted`` and a probabilistic ``net``, the draws' copula fitted
    on the validation region (:func:`dm2gal.infer.copula_fit.fit_region_copula`) and saved as
    ``out_dir/copula.json``; else None (draws independent per voxel)."""
    if settings.draw_correlation != "fitted" or not hasattr(net, "infer_draws"):
        return None
    store = datamodule.store
    kernel = fit_region_copula(
        net,
        datamodule.transform,
        [store.read(name) for name in datamodule.inputs],
        store.read(datamodule.target),
        datamodule.splits.val,
        settings.copula_radius,
    )
    kernel.save(out_dir / COPULA_FILE)
    return kernel


def predict_network(
    net: Any,
    transform: Any,
    inputs: Sequence[np.ndarray],
    region: Region,
    options: PredictOptions,
    draws: int,
    seed: int,
) -> np.ndarray | list[np.ndarray]:
    """A deterministic ``net``'s prediction of ``region``; a probabilistic one's ``[mean,
    *draws]`` with ``draws`` draws (:func:`draw_seeds` of ``seed``), from the same forward
    passes. :func:`dm2gal.eval.realisations.network_fields` names them."""
    if not hasattr(net, "infer_draws"):
        return predict_fields(net, transform, inputs, region, options)
    seeds = draw_seeds(seed, draws)
    predicted = predict_fields(net, transform, inputs, region, options, seeds=seeds)
    return predicted if seeds else [predicted]


def region_field(field: np.ndarray, region: Region) -> np.ndarray:
    """The voxels of ``field`` covered by ``region`` (periodic), as float32."""
    return read_crop(field, region.start, region.size)


def score_above(
    out_dir: Path,
    side: float,
    truth: np.ndarray,
    fields: dict[str, np.ndarray],
    min_mass: float,
    options: ReportOptions,
    draws: Mapping[str, Sequence[np.ndarray]] | None = None,
) -> dict[str, float]:
    """The paper's scoring beside the whole field: a report on the voxels whose true M* exceeds
    ``min_mass`` (Msun/h; every other voxel set to 0 in every field and draw), in
    ``above_<min_mass>/``; metrics named ``<field>/above_<min_mass>/<metric>``."""
    keep = truth > min_mass
    if not keep.any():
        log.warning("no test voxel has a true M* above evaluation.min_mass = %g", min_mass)
        return {}

    def cut(field: np.ndarray) -> np.ndarray:
        return np.where(keep, field, 0).astype(np.float32)

    above = write_report(
        out_dir / f"above_{min_mass:g}",
        side,
        cut(truth),
        {name: cut(field) for name, field in fields.items()},
        options,
        draws={name: [cut(x) for x in xs] for name, xs in (draws or {}).items()},
    )
    return report_metrics(above, f"/above_{min_mass:g}")


@dataclass
class RegionFields:
    """The fields compared on the test region (Msun/h per voxel): the ``truth``, each scored
    field by its row name (network, calibration, HODs, oracles) and the random fields' draws."""

    truth: np.ndarray
    fields: dict[str, np.ndarray]
    draws: dict[str, list[np.ndarray]]


def cubic_test_region(datamodule: Any) -> Region:
    """The data module's test region, which must be a cube (for P(k) and B(k))."""
    region = datamodule.splits.test
    if len(set(region.size)) != 1:
        raise ConfigError(
            f"data.splits: the test region must be a cube for P(k) and B(k), got size {region.size}"
        )
    return region


def split_draws(
    named: Mapping[str, list[np.ndarray]],
) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """The network's named fields (:func:`~dm2gal.eval.realisations.network_fields`) as
    ``(scored fields, draws of the random field model_draw)``."""
    draws = {name: xs for name, xs in named.items() if name == "model_draw"}
    return {name: xs[0] for name, xs in named.items() if name not in draws}, draws


def fit_test_calibration(
    predict: Callable[[Region], np.ndarray], datamodule: Any, settings: EvaluationSettings
) -> QuantileMap:
    """The quantile calibration of ``predict`` fitted on about ``settings.calibration_voxels``
    training-region voxels of the data module's box (slabs ``settings.tile`` thick)."""
    target = datamodule.store.read(datamodule.target)
    return fit_calibration(
        predict, target, datamodule.splits, settings.tile, settings.calibration_voxels
    )


def reference_fields(
    store: FieldStore, region: Region, hods: Mapping[str, HOD], seed: int
) -> dict[str, np.ndarray]:
    """The benchmarks on ``region``: one draw (seed ``seed``) of each fitted HOD and, on a mock
    source, the oracle fields."""
    painted = paint_hods(hods, store, [seed], region)
    return {name: draw for name, (draw,) in painted.items()} | oracle_fields(store, region)


def write_test_fields(
    out_dir: Path,
    store: FieldStore,
    region: Region,
    test: RegionFields,
    config: dict | None,
    seed: int,
) -> None:
    """A field store at ``out_dir`` of the test region's fields (``<draws>_<i>`` with their
    seeds), recording the source, region, ``config``, code version and seed."""
    results = FieldStore(out_dir)
    results.init(
        region.size[0] * store.box / store.grid,
        region.size[0],
        source=str(store.root),
        region_start=list(region.start),
        config=config,
        code_version=__version__,
        seed=seed,
    )
    results.write("truth", test.truth)
    for name, field in test.fields.items():
        results.write(name, field)
    for name, xs in test.draws.items():
        for i, (x, s) in enumerate(zip(xs, draw_seeds(seed, len(xs)), strict=True)):
            results.write(f"{name}_{i}", x, seed=s)


def score_test_fields(
    out_dir: Path, side: float, test: RegionFields, settings: EvaluationSettings, logger: Any = None
) -> dict[str, float]:
    """The report on the test fields (a cube of ``side`` Mpc/h) in ``out_dir``, and with
    ``settings.min_mass`` the paper's scoring beside it; its metrics flat."""
    report = write_report(
        out_dir, side, test.truth, test.fields, settings.report, logger, test.draws
    )
    metrics = report_metrics(report)
    if settings.min_mass is not None:
        metrics |= score_above(
            out_dir, side, test.truth, test.fields, settings.min_mass, settings.report, test.draws
        )
    return metrics


def evaluate_test_region(
    net: Any,
    datamodule: Any,
    out_dir: Path,
    settings: EvaluationSettings,
    *,
    channels_last: bool = False,
    hods: Mapping[str, HOD] | None = None,
    seed: int = 0,
    config: dict | None = None,
    logger: Any = None,
) -> dict[str, float]:
    """Predict the test region with ``net``, compare truth / model / the fitted ``hods`` / the
    oracles (mock sources), write every artefact
    (with ``settings.min_mass``: also the paper's scoring, on voxels whose true M* exceeds it,
    into ``above_<min_mass>/``). With ``settings.calibration_voxels`` > 0, about that many voxels
    of the box are also predicted to fit a quantile calibration on their training-region voxels
    (:mod:`dm2gal.infer.calibration`, saved as ``calibration.csv``), and the calibrated
    prediction is reported as ``model_calibrated`` beside the raw one. A probabilistic ``net``
    is reported as ``model_mean`` (calibrated as ``model_calibrated``) and ``settings.draws``
    draws, ``model_draw`` (seeds ``seed + i``, also written to the fields store as
    ``model_draw_<i>``); see the module's docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store, region = datamodule.store, cubic_test_region(datamodule)
    inputs = [store.read(name) for name in datamodule.inputs]
    copula = fit_draw_copula(net, datamodule, settings, out_dir)
    options = replace(settings.predict_options(channels_last), copula=copula)
    predicted = predict_network(
        net, datamodule.transform, inputs, region, options, settings.draws, seed
    )
    fields, draws = split_draws(network_fields(predicted))
    (prediction,) = fields.values()  # the network's field that a calibration maps
    if settings.calibration_voxels:
        predict = partial(predict_fields, net, datamodule.transform, inputs, options=options)
        calibrate = fit_test_calibration(predict, datamodule, settings)
        calibrate.save(out_dir / CALIBRATION_FILE)
        fields["model_calibrated"] = calibrate(prediction)
    fields |= reference_fields(store, region, hods or {}, seed)
    test = RegionFields(region_field(store.read(datamodule.target), region), fields, draws)
    write_test_fields(out_dir / "fields", store, region, test, config, seed)
    return score_test_fields(
        out_dir, region.size[0] * store.box / store.grid, test, settings, logger
    )


def report_metrics(report: Mapping[str, Any], suffix: str = "") -> dict[str, float]:
    """A report's scores flat, ``<field><suffix>/<metric>``, and the spread of each random
    field's draws as ``<field><suffix>/<metric>/std`` (where there are two draws or more)."""
    metrics = {
        f"{name}{suffix}/{key}": float(value)
        for name, values in report["models"].items()
        for key, value in values.items()
    }
    for name, block in report.get("draws", {}).items():
        metrics |= {
            f"{name}{suffix}/{key}/std": std for key, std in block["std"].items() if std is not None
        }
    return metrics


def evaluate_run(
    module: Any,
    datamodule: Any,
    cfg: DictConfig,
    run_dir: Path,
    loggers: Sequence[Any] = (),
    checkpoint: str | None = None,
    *,
    hods: Sequence[DictConfig] | None = None,
) -> dict[str, float]:
    """Evaluate a trained module on its data module's test region into ``run_dir/evaluation``
    with the run's ``evaluation`` settings and HOD benchmarks (``cfg.hods``, or ``hods``)."""
    found = find_wandb(loggers)
    run = found.experiment if found is not None else None

    def log_artefact(name: str, value: Any) -> None:
        if run is None:
            return
        import wandb  # lazy: optional on GPU machines, slow to import

        is_image = isinstance(value, str | Path) and str(value).endswith(".png")
        run.log({f"eval/{name}": wandb.Image(str(value)) if is_image else value})

    if hods is None:
        hods = list((cfg.get("hods") or {}).values())
    settings = EvaluationSettings.from_config(cfg.get("evaluation"))
    if settings.report.backend == "torch":
        settings = _on_device(settings)
    fitted = fit_hods(hods, datamodule)
    channels_last = module.hparams.get("channels_last", False)
    # a conditioned network predicts the universe of the data module's (first) store
    net = bind_parameters(module.net, datamodule.store, None)
    # written whole into a staging folder that then replaces run_dir/evaluation: an earlier
    # evaluation's files never stay beside this one's, a failed one leaves the earlier intact
    with staged_dir(Path(run_dir) / EVALUATION_DIR) as out:
        write_hod_params(fitted, out)
        metrics = evaluate_test_region(
            net,
            datamodule,
            out,
            settings,
            channels_last=channels_last,
            hods=fitted,
            seed=cfg.seed,
            config={"config": OmegaConf.to_container(cfg, resolve=False), "checkpoint": checkpoint},
            logger=log_artefact,
        )
        if settings.realisations or settings.stores:
            summary = score_realisations(
                net, datamodule, out, settings, fitted, cfg.seed, channels_last
            )
            metrics.update(realisation_metrics(summary))
        if run is not None:
            log_evaluation(run, out, metrics)
    for lg in loggers:
        lg.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
    return metrics


def write_hod_params(hods: Mapping[str, HOD], out_dir: Path) -> None:
    """``<out_dir>/hods.json``: each fitted HOD's parameters (e.g. the environment radius
    ``binned_env`` chose on the training region)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {name: hod.fitted_params() for name, hod in hods.items()}
    atomic_write_text(out_dir / HOD_PARAMS_FILE, json.dumps(params, indent=2))


def score_realisations(
    net: Any,
    datamodule: Any,
    out_dir: Path,
    settings: EvaluationSettings,
    hods: Mapping[str, HOD],
    seed: int,
    channels_last: bool = False,
) -> dict[str, dict[str, dict]]:
    """Score the run on ``settings.realisations`` further universes of its mock source and on
    ``settings.stores``, whole-box, into ``out_dir`` (:mod:`dm2gal.eval.realisations`), with the
    calibration and draw copula the test-region evaluation saved there and the HODs fitted on
    the training region."""
    stores = mock_realisations(datamodule.source, settings.realisations, settings.realisation_seed)
    stores += [FieldStore(path) for path in settings.stores]
    trained = {Path(box.root).resolve() for box in datamodule.training_boxes}
    seen = [str(store.root) for store in stores if Path(store.root).resolve() in trained]
    if seen:
        raise ConfigError(
            f"evaluation.realisations / stores: {seen} are boxes the run trained on "
            "(data.training_universes / training_stores); score unseen boxes"
        )
    voxel = datamodule.store.box / datamodule.store.grid
    for store in stores:
        missing = [name for name in datamodule.inputs if name not in store.fields()]
        if missing:
            raise ValueError(f"{store.root}: lacks the network's input fields {missing}")
        store.check_voxel_size(voxel, "the network was trained on")
    copula = out_dir / COPULA_FILE  # fitted by the test-region evaluation
    options = replace(
        settings.predict_options(channels_last, progress=False),
        copula=CopulaKernel.load(copula) if copula.is_file() else None,
    )

    def predict(store: FieldStore) -> np.ndarray | list[np.ndarray]:
        inputs = [store.read(name) for name in datamodule.inputs]
        region = whole_box(store)
        return predict_network(
            net, datamodule.transform, inputs, region, options, settings.draws, seed
        )

    calibration = out_dir / CALIBRATION_FILE
    calibrate = QuantileMap.load(calibration) if settings.calibration_voxels else None
    return evaluate_realisations(
        stores,
        predict,
        datamodule.target,
        out_dir,
        settings.report,
        calibrate=calibrate,
        hods=hods,
        hod_draws=settings.hod_draws,
        seed=seed,
    )


def realisation_metrics(summary: Mapping[str, Mapping[str, Mapping]]) -> dict[str, float]:
    """Flat ``realisations/<field>/<metric>`` means and ``.../std`` spreads for loggers."""
    out = {}
    for field, metrics in summary.items():
        for metric, entry in metrics.items():
            out[f"realisations/{field}/{metric}"] = entry["mean"]
            if entry["std"] is not None:
                out[f"realisations/{field}/{metric}/std"] = entry["std"]
    return out


def _on_device(settings: EvaluationSettings) -> EvaluationSettings:
    """``settings`` with the report's torch statistics on :func:`default_device`."""
    return replace(settings, report=replace(settings.report, device=str(default_device())))


def evaluate_paths(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """``evaluate.py``: evaluate every run under ``cfg.run_dir`` (or the run of ``cfg.ckpt_path``)
    with the HOD benchmarks of ``cfg.hods`` and the run's ``evaluation`` settings updated by the
    non-null ones of ``cfg.evaluation``; return metrics per output directory (the run's, or
    ``cfg.out_dir`` for a single run), each holding the ``evaluation`` folder written."""
    hods = list((cfg.get("hods") or {}).values())
    if cfg.run_dir is not None:
        runs = [r for r in find_runs(Path(cfg.run_dir)) if (r / "checkpoints").is_dir()]
    else:
        runs = [Path(cfg.ckpt_path).resolve().parent.parent]
    results = {}
    for run in runs:
        run_cfg, module, datamodule, ckpt = load_run(
            run,
            cfg.ckpt_path if len(runs) == 1 else None,
            trust=bool(cfg.get("trust_checkpoint", False)),
        )
        given = OmegaConf.to_container(cfg.get("evaluation") or {})
        given = {k: v for k, v in given.items() if v is not None}
        run_cfg.evaluation = OmegaConf.merge(run_cfg.get("evaluation") or {}, given)
        loggers = []
        if cfg.wandb:
            loggers = [
                wandb_logger(
                    save_dir=str(run),
                    project=run_cfg.logger.get("wandb", {}).get("project", "dm2gal"),
                    job_type="evaluate",
                    group=OmegaConf.select(run_cfg, "logger.wandb.group"),
                )
            ]
        out = Path(cfg.out_dir) if cfg.out_dir and len(runs) == 1 else run
        try:
            results[str(out)] = evaluate_run(
                module, datamodule, run_cfg, out, loggers, str(ckpt), hods=hods
            )
        finally:
            for lg in loggers:
                lg.experiment.finish()
    return results
