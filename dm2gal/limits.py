"""``python -m dm2gal.limits runs=[<run>,<run>,...] [out=<file>]``: a probabilistic network's
realisation scores against the physical limit (the oracle) and issue 12's goals, pooled over
the runs' unseen boxes with standard errors (:mod:`dm2gal.eval.limits`); prints the table and
writes it to ``out`` (default ``limits.md`` in the first run). Options: ``conf/limits.yaml``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.eval.limits import markdown, pool
from dm2gal.io.store import atomic_write_text


@hydra.main(version_base="1.3", config_path="../conf", config_name="limits")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    runs = [Path(run) for run in cfg.runs]
    pooled, skipped = pool(runs)
    table = markdown(pooled, skipped, runs)
    out = Path(cfg.out) if cfg.out else runs[0] / "limits.md"
    atomic_write_text(out, table)
    print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
