"""Train a dm2gal network: ``python train.py [group=option ...] [key=value ...]``."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DM2GAL_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from dm2gal.cli import reports_user_errors  # noqa: E402
from dm2gal.eval.evaluation import evaluate_run  # noqa: E402
from dm2gal.train.pipeline import run, torch_settings  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@reports_user_errors
def main(cfg: DictConfig) -> float | None:
    """Fit, test and evaluate; return the optimised metric for sweepers."""
    torch_settings()
    return run(cfg, evaluate=evaluate_run).get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
