"""``python -m dm2gal.predict run_dir=<run> [store=...] [out=...] [tile=...]``: a trained run's
prediction of a whole box (its own, or any field store holding its input fields, e.g. from
``python -m dm2gal.fields``) into a field store, with the run, checkpoint, normalisation and
input-field hashes in its metadata; ``samples=K`` adds K seeded draws of a probabilistic run
(``<name>_mean``, ``<name>_draw_<i>``); a conditioned run (``model.conditioning=film``)
predicts the universe of ``params.<name>=<value>``, else of the store's recorded parameters,
inside its training ranges unless ``allow_extrapolation=true``. Options:
``conf/predict.yaml``; the work: :func:`dm2gal.infer.box.predict_box`."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.errors import ConfigError
from dm2gal.infer.box import BoxPrediction, BoxRequest, RunNetwork, predict_box
from dm2gal.infer.parameters import bind_parameters
from dm2gal.io.store import FieldStore
from dm2gal.train.runs import load_run


def load_network(cfg: DictConfig) -> tuple[RunNetwork, FieldStore]:
    """The run's network and the store to predict (``cfg.store``, else the run's own box); a
    conditioned network bound to that universe's parameters (``cfg.params``, else the
    store's)."""
    run_dir = Path(cfg.run_dir)
    run_cfg, module, datamodule, ckpt = load_run(run_dir, cfg.ckpt_path, cfg.store is None)
    if datamodule.transform is None:
        raise ConfigError(
            f"{ckpt}: the checkpoint holds no input normalisation (data module state)"
        )
    store = FieldStore(cfg.store) if cfg.store else datamodule.store
    network = RunNetwork(
        net=bind_parameters(module.net, store, cfg.params, cfg.allow_extrapolation),
        transform=datamodule.transform,
        inputs=list(datamodule.inputs),
        voxel_size=datamodule.trained_voxel_size,
        evaluation=run_cfg.get("evaluation") or {},
        channels_last=module.hparams.get("channels_last", False),
        run_dir=run_dir,
        checkpoint=Path(ckpt),
    )
    return network, store


def predict(cfg: DictConfig) -> BoxPrediction:
    """Predict the box selected by ``cfg`` (``conf/predict.yaml``)."""
    request = BoxRequest(
        out=cfg.out,
        name=cfg.name,
        samples=cfg.samples,
        seed=cfg.seed,
        tile=cfg.tile,
        batch_size=cfg.batch_size,
        calibration=cfg.calibration,
    )
    return predict_box(*load_network(cfg), request)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    print("\n".join(predict(cfg).report()))


if __name__ == "__main__":
    main()
