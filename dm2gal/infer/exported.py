"""A trained network ready to paint, and its shareable form: an exported model directory.

An exported model is ``model.safetensors`` (the network's weights: tensors only, nothing that
runs code when read) plus ``model_card.json`` (architecture config, input-field recipe,
normalisation, voxel size, cosmology and redshift of the training run, a conditioned network's
universe parameters and their training ranges, training data, scores against the HODs and the
oracle, the draws' copula kernel where the run fitted one: :mod:`dm2gal.infer.copula`) and,
where the run has one, ``calibration.csv``. Loading it
never unpickles anything; the architecture's ``_target_`` must be a class of
:mod:`dm2gal.models`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file

from dm2gal import __version__
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError, MissingFileError
from dm2gal.infer.calibration import CALIBRATION_FILE, QuantileMap
from dm2gal.infer.copula import CopulaKernel
from dm2gal.infer.predict import PredictOptions
from dm2gal.io.recipe import Recipe
from dm2gal.io.store import atomic_write_text, staged_dir
from dm2gal.models.base import FieldNet

WEIGHTS_FILE, CARD_FILE = "model.safetensors", "model_card.json"
CARD_FORMAT = "dm2gal-model/1"
#: the package whose classes an exported architecture may name
MODELS_PACKAGE = "dm2gal.models."


@dataclass
class TrainedModel:
    """A trained network and all it needs to paint.

    Attributes:
        net: the network (weights loaded, eval mode).
        architecture: its config (``_target_`` and arguments).
        transform: the input / target normalisation.
        recipe: the input-field recipe of its training run.
        options: tile, batch size and memory layout for prediction.
        calibration: the quantile calibration, where the run has one.
        provenance: where it comes from (run directory and checkpoint, or exported model).
        card: the extra model-card entries (training data, scores).
    """

    net: FieldNet
    architecture: dict[str, Any]
    transform: FieldTransform
    recipe: Recipe
    options: PredictOptions
    calibration: QuantileMap | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def probabilistic(self) -> bool:
        """Whether the network gives seeded draws."""
        return hasattr(self.net, "infer_draws")


def net_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's tensors, contiguous on the CPU (safetensors stores no shared views)."""
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


def export_model(model: TrainedModel, out_dir: str | Path) -> Path:
    """Write ``model`` as an exported model directory ``out_dir`` (staged, renamed when
    complete); return it."""
    out_dir = Path(out_dir)
    card = {
        "format": CARD_FORMAT,
        "code_version": __version__,
        "architecture": model.architecture,
        "recipe": model.recipe.to_dict(),
        "normalisation": model.transform.state_dict(),
        "voxel_size": model.recipe.voxel_size,
        "cosmology": {"omega_m": model.recipe.sim.omega_m, "h": model.recipe.sim.h},
        "redshift": model.recipe.sim.redshift,
        "prediction": {
            "tile": model.options.tile,
            "batch_size": model.options.batch_size,
            "channels_last": model.options.channels_last,
        },
        "calibration": model.calibration is not None,
        "draw_copula": None if model.options.copula is None else model.options.copula.to_dict(),
        "provenance": model.provenance,
        **model.card,
    }
    if model.net.film is not None:  # the weights carry them too (FiLM buffers)
        card["parameter_ranges"] = model.net.film.ranges
    with staged_dir(out_dir) as staging:
        save_file(net_weights(model.net), str(staging / WEIGHTS_FILE))
        if model.calibration is not None:
            model.calibration.save(staging / CALIBRATION_FILE)
        atomic_write_text(staging / CARD_FILE, json.dumps(card, indent=2, default=str))
    return out_dir


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is an exported model directory."""
    return (Path(path) / CARD_FILE).is_file()


def load_exported(path: str | Path) -> TrainedModel:
    """Read an exported model directory (weights with safetensors, no pickle)."""
    path = Path(path)
    card_path = path / CARD_FILE
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MissingFileError(f"{card_path}: not a readable model card ({err})") from err
    if card.get("format") != CARD_FORMAT:
        raise ConfigError(f"{card_path}: format {card.get('format')!r}, expected {CARD_FORMAT!r}")
    architecture = card["architecture"]
    target = str(architecture.get("_target_", ""))
    if not target.startswith(MODELS_PACKAGE):
        raise ConfigError(
            f"{card_path}: architecture._target_ = {target!r} is not a class of {MODELS_PACKAGE}*"
        )
    net = instantiate(architecture)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise MissingFileError(f"{weights}: weights missing from the exported model")
    try:
        net.load_state_dict(load_file(str(weights)))
    except (RuntimeError, OSError) as err:
        raise ConfigError(f"{weights}: weights do not fit {target} ({err})") from err
    table = path / CALIBRATION_FILE
    known = {"format", "code_version", "architecture", "recipe", "normalisation", "voxel_size",
             "cosmology", "redshift", "prediction", "calibration", "provenance",
             "parameter_ranges", "draw_copula"}  # fmt: skip
    copula = card.get("draw_copula")
    return TrainedModel(
        net=net.eval(),
        architecture=architecture,
        transform=FieldTransform(**card["normalisation"]),
        recipe=Recipe.from_dict(card["recipe"], str(card_path)),
        options=PredictOptions(
            **card["prediction"],
            copula=None if copula is None else CopulaKernel.from_dict(copula, str(card_path)),
        ),
        calibration=QuantileMap.load(table) if card.get("calibration") else None,
        provenance={"model": str(path.resolve())},
        card={k: v for k, v in card.items() if k not in known},
    )
