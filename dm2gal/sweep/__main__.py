"""``python -m dm2gal.sweep dir=<multirun_dir> [out=<folder>] [wandb=true|false]``: the
comparison table and plot of a sweep (:func:`dm2gal.sweep.aggregate`)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.sweep.aggregation import aggregate
from dm2gal.sweep.runs import logged_to_wandb


@hydra.main(version_base="1.3", config_path="../../conf", config_name="sweep")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    """Write the table and plot of ``cfg.dir`` (``conf/sweep.yaml``), print the headline table;
    log to W&B when ``cfg.wandb`` says so (null: when the runs did)."""
    use_wandb = logged_to_wandb(Path(cfg.dir)) if cfg.wandb is None else bool(cfg.wandb)
    table = aggregate(Path(cfg.dir), Path(cfg.out) if cfg.out else None, wandb=use_wandb)
    print(table.markdown.read_text())
    print(f"wrote {table.csv}, {table.markdown}, {table.plot}")


if __name__ == "__main__":
    main()
