"""The sweep's tables logged to a W&B run of the sweep's group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dm2gal.sweep.runs import read_config
from dm2gal.sweep.table import SweepTable
from dm2gal.train.loggers import wandb_logger


def log_to_wandb(table: SweepTable, out: Path, columns: list[str], rows: list[dict]) -> None:
    """Log the sweep's full table (``sweep/runs``) and its headline view (``sweep/headline``)
    to a W&B run (job type ``sweep``) in the group of the sweep's runs (their
    ``logger.wandb.group``, else the multirun directory's name, as in training), offline unless
    an account is configured (:func:`dm2gal.train.loggers.wandb_logger`). Its id is kept in
    ``out/wandb_id.txt``: aggregating again updates the same W&B run."""
    import wandb  # lazy: optional on GPU machines, slow to import

    config = read_config(table.root / table.rows[0]["run"]) if table.rows else {}
    settings = (config.get("logger") or {}).get("wandb") or {}
    group = settings.get("group") or table.root.name
    logger = wandb_logger(
        save_dir=str(out),
        persist_id=True,
        project=settings.get("project", "dm2gal"),
        group=group,
        job_type="sweep",
        name=f"{group}-sweep",
    )
    run = logger.experiment
    try:
        run.log(
            {
                "sweep/runs": _wandb_table(wandb, table.columns, table.rows),
                "sweep/headline": _wandb_table(wandb, columns, rows),
            }
        )
    finally:
        run.finish()


def _wandb_table(wandb: Any, columns: list[str], rows: list[dict[str, Any]]) -> Any:
    """A ``wandb.Table`` of ``rows`` over ``columns``: numbers as numbers, other values as text."""

    def cell(value: Any) -> Any:
        return value if value is None or isinstance(value, int | float) else str(value)

    data = [[cell(row.get(c)) for c in columns] for row in rows]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)
