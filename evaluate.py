"""Evaluate trained runs on the held-out test region: ``python evaluate.py run_dir=...``.

``run_dir`` is a train run directory or a multirun folder (every run in it is evaluated and a
comparison table is written beside them).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DM2GAL_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from dm2gal.cli import reports_user_errors  # noqa: E402
from dm2gal.errors import ConfigError  # noqa: E402
from dm2gal.eval.evaluation import EVALUATION_DIR, evaluate_paths  # noqa: E402
from dm2gal.sweep import aggregate  # noqa: E402
from dm2gal.train.pipeline import read_realisations, summary_table  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    """Recompute predictions, statistics, plots and tables next to each run."""
    if cfg.run_dir is None and cfg.ckpt_path is None:
        raise ConfigError("give run_dir=<run or multirun directory> or ckpt_path=<checkpoint>")
    results = evaluate_paths(cfg)
    for out, metrics in results.items():
        print(summary_table(metrics, out, read_realisations(out)))
        print(f"wrote {Path(out) / EVALUATION_DIR}")
    if len(results) > 1:
        aggregate(Path(cfg.run_dir), wandb=bool(cfg.wandb))


if __name__ == "__main__":
    main()
