"""``python -m dm2gal.export run_dir=<train run> out=<dir>``: a trained run as an exported
model (safetensors weights + model card, :mod:`dm2gal.infer.exported`) that
``python -m dm2gal.paint model=<dir>`` paints with, bit-identically to the run.
Options: ``conf/export.yaml``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.infer.exported import export_model
from dm2gal.paint.model import load_run_model


def export(cfg: DictConfig) -> Path:
    """Export the run of ``cfg`` (``conf/export.yaml``); return the model directory."""
    model = load_run_model(cfg.run_dir, cfg.ckpt_path, cfg.trust_checkpoint)
    out = export_model(model, cfg.out)
    print(f"exported {cfg.run_dir} to {out}")
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
