"""W&B views of an evaluation: curves as tables and line charts, headline scores in the summary.

Images cannot be overlaid across runs; tables can. Each curve (``pk``, ``rk``, ``bk``, ``pdf``)
becomes a ``wandb.Table`` with the columns of the report's CSV file (one column per field:
``pk_truth``, ``pk_model``, ``ratio_hod_binned``, ...) and the P(k) ratios and r(k) line charts
(:mod:`dm2gal.train.wandb_curves`, which the validation callback logs the same way). The run
summary gets every score as ``<prefix>/<field>/<metric>`` and the network-minus-HOD margins as
``<prefix>/margin/<metric>`` (:func:`dm2gal.eval.headline.margins`), so the runs table sorts
and filters by them. Everything is generic over the field and score names the report holds.

"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dm2gal.eval.headline import margins, nest, read_columns
from dm2gal.train.wandb_curves import curve_payload

#: the report's curve tables (``<stem>.csv``) logged as W&B tables
CURVES = ("pk", "rk", "bk", "pdf")


def summary(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` (``{"<field>/<metric>": value}``) under ``prefix``, plus the margins
    ``<prefix>/margin/<metric>``."""
    out = {f"{prefix}/{key}": float(value) for key, value in metrics.items()}
    out |= {f"{prefix}/margin/{k}": v for k, v in margins(nest(metrics)).items()}
    return out


def log_evaluation(run: Any, report_dir: Path, metrics: Mapping[str, float]) -> None:
    """Log the curve tables and charts of the report in ``report_dir`` (its CSV files) to the
    W&B ``run`` under ``eval/``, and the scores and margins to its summary."""
    curves = {
        stem: read_columns(path)
        for stem in CURVES
        if (path := Path(report_dir) / f"{stem}.csv").is_file()
    }
    run.log(curve_payload("eval", curves))
    run.summary.update(summary("eval", metrics))
