"""``python -m dm2gal.hypercube run_dir=<train run> [universes_from=<run>] [test_count=16]
[response_seeds=[...]] [out=<dir>]``: a
network scored on the unseen universes of a hypercube of mock universes (``data=mock_lh``)
against an HOD fitted on each universe's own training region and the oracle, and its P(k)
response to each parameter against the truth's (:mod:`dm2gal.eval.hypercube`). Options:
``conf/hypercube.yaml``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.errors import ConfigError
from dm2gal.eval.evaluation import EvaluationSettings
from dm2gal.eval.hypercube import TABLE_FILE, evaluate_hypercube
from dm2gal.train.runs import load_run

#: where a run keeps its hypercube evaluation by default
HYPERCUBE_DIR = "hypercube"


def hypercube_source(datamodule: Any, where: str) -> Any:
    """The data source of a run's ``datamodule`` when it is a hypercube (it has test
    universes), else a :class:`ConfigError` naming ``where``."""
    source = getattr(datamodule, "source", None)
    if not hasattr(source, "test_universes"):
        raise ConfigError(
            f"{where}: the run's data source ({type(source).__name__}) is not a hypercube of "
            "universes (train with data=mock_lh, or give universes_from=<such a run>)"
        )
    return source


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the run of ``cfg`` (``conf/hypercube.yaml``); return ``hypercube.json``'s
    content."""
    run_dir = Path(cfg.run_dir)
    run_cfg, module, datamodule, _ = load_run(run_dir, cfg.ckpt_path, trust=cfg.trust_checkpoint)
    if cfg.universes_from is None:
        source = hypercube_source(datamodule, "run_dir")
    else:
        other = load_run(Path(cfg.universes_from), setup_data=False, trust=cfg.trust_checkpoint)
        source = hypercube_source(other[2], "universes_from")
    seeds = None if cfg.response_seeds is None else list(cfg.response_seeds)
    source = source.with_evaluation(cfg.test_count, seeds)
    settings = EvaluationSettings.from_config(run_cfg.get("evaluation"))
    if cfg.draws is not None:
        settings = dataclasses.replace(settings, draws=cfg.draws)
    out = Path(cfg.out) if cfg.out else run_dir / HYPERCUBE_DIR
    result = evaluate_hypercube(
        module.net, datamodule, source, cfg.hod, out, settings, run_cfg.seed, cfg.response
    )
    print((out / TABLE_FILE).read_text())
    print(f"wrote {out}")
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="hypercube")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
