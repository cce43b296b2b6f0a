"""The best trial(s) of an Optuna study (``hparams_search=optuna``), as the sweep table's last
line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dm2gal.sweep.table import format_cell

STUDY = "optimization_results.yaml"  # written by the Optuna sweeper


def read_study(multirun_dir: Path) -> dict[str, Any] | None:
    """The Optuna sweeper's ``optimization_results.yaml`` (``best_params``, ``best_value``, or
    ``solutions`` for several objectives), or ``None`` for other sweeps."""
    path = Path(multirun_dir) / STUDY
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def study_markdown(study: dict[str, Any]) -> str:
    """One line per best trial of an Optuna study: its value(s) and parameters."""
    best = study.get("solutions") or [
        {"values": [study["best_value"]], "params": study["best_params"]}
    ]
    lines = [
        "Optuna best: "
        + ", ".join(format_cell(v) for v in trial["values"])
        + " at "
        + " ".join(f"{k}={format_cell(v)}" for k, v in trial["params"].items())
        for trial in best
    ]
    return "\n" + "\n".join(lines) + "\n"
