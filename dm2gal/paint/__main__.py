"""``python -m dm2gal.paint model=<run | exported model> sim=<tng|gadget|abacus|mock>
sim.root=<path> [samples=4] out=<dir>``: a trained network paints a gravity-only run from its
own files (:mod:`dm2gal.paint.pipeline`). Options: ``conf/paint/paint.yaml``, sources
``conf/paint/sim/``."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dm2gal.cli import reports_user_errors
from dm2gal.infer.exported import TrainedModel
from dm2gal.infer.parameters import bind_parameters
from dm2gal.paint.model import load_model
from dm2gal.paint.pipeline import PaintOptions, PaintSummary, paint_run
from dm2gal.paint.slabs import paint_slab, work_dir
from dm2gal.paint.sources import GravitySource
from dm2gal.paint.trust import TrustOptions

#: source options that default to the network's recipe when null
RECIPE_KEYS = ("subhalo_mass", "subhalo_min_mass")


def build_source(cfg: DictConfig, model: TrainedModel) -> GravitySource:
    """The ``sim`` source, with the recipe's mass assignment and, where the config leaves them
    null, the recipe's (sub)halo mass definition and minimum mass."""
    recipe = model.recipe.to_dict()["fields"]
    sim = OmegaConf.to_container(cfg.sim, resolve=True)
    filled = {key: recipe[key] for key in RECIPE_KEYS if sim.get(key) is None}
    return instantiate(cfg.sim, mas=recipe["mas"], progress=cfg.progress, **filled)


def paint_options(cfg: DictConfig) -> PaintOptions:
    """The painting options of ``conf/paint.yaml``."""
    return PaintOptions(
        samples=cfg.samples,
        seed=cfg.seed,
        name=cfg.name,
        min_mass=cfg.catalog_min_mass,
        assignment=cfg.catalog_assignment,
        tile=cfg.tile,
        batch_size=cfg.batch_size,
        trust=TrustOptions(cfg.voxel_tolerance, cfg.redshift_tolerance, cfg.allow_redshift),
        progress=cfg.progress,
    )


def paint(cfg: DictConfig) -> PaintSummary | None:
    """Paint the configured run (whole, one slab, or every slab in turn); print and return
    the summary (None for a slab that leaves the assembly to another)."""
    options = paint_options(cfg)
    model = load_model(cfg.model, cfg.ckpt_path, cfg.trust_checkpoint)
    source = build_source(cfg, model)
    # a conditioned network paints the universe of the command line's params, else of the
    # values the source records (a mock universe's store)
    model.net = bind_parameters(
        model.net, source.parameter_store(), cfg.params, cfg.allow_extrapolation
    )
    if cfg.slab is not None:
        summary = paint_slab(model, source, cfg.out, cfg.slabs, cfg.slab, options)
    elif cfg.slabs != 1:
        for slab in range(cfg.slabs):
            summary = paint_slab(model, source, cfg.out, cfg.slabs, slab, options)
    else:
        summary = paint_run(model, source, cfg.out, options)
    if summary is None:
        print(f"painted slab {cfg.slab} of {cfg.slabs} into {work_dir(cfg.out)}")
    else:
        print(summary.table())
    return summary


@hydra.main(version_base="1.3", config_path="../../conf/paint", config_name="paint")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    paint(cfg)


if __name__ == "__main__":
    main()
