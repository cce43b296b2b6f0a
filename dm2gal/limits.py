"""``python -m dm2gal.limits runs=[<run>,<run>,...] [out=<file>]``: a network's realisation
scores, pooled over the runs' unseen boxes with standard errors (:mod:`dm2gal.eval.limits`):
the claim table (the network against the strongest benchmark of its kind per statistic) and
the goals against the physical limit (the oracle); prints both and writes them to ``out``
(default ``limits.md`` in the first run). Options: ``conf/limits.yaml``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.eval.limits import claims, claims_markdown, markdown, pool
from dm2gal.io.store import atomic_write_text


@hydra.main(version_base="1.3", config_path="../conf", config_name="limits")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    runs = [Path(run) for run in cfg.runs]
    pooled, skipped = pool(runs)
    table = claims_markdown(claims(runs)) + "\n" + markdown(pooled, skipped, runs)
    out = Path(cfg.out) if cfg.out else runs[0] / "limits.md"
    atomic_write_text(out, table)
    print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
