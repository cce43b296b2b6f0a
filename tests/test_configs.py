"""Every config group option composes, and instantiates where this machine can run it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dm2gal.models.base import FieldNet
from dm2gal.train.build import build, check_config, data_module_config, instantiate_group

ROOT = Path(__file__).resolve().parents[1]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def test_every_group_of_the_design_has_options():
    for group in (
        "data",
        "model",
        "loss",
        "sampler",
        "optim",
        "trainer",
        "logger",
        "callbacks",
        "hod",
        "experiment",
        "hparams_search",
        "paths",
        "debug",
        "hydra/launcher",
    ):
        assert options(group), f"conf/{group} has no option"
    assert {"mock", "tng100", "camels", "fields"} <= set(options("data"))
    assert {"paper_cnn", "resnet3d", "unet3d"} <= set(options("model"))
    assert {"uniform", "mass_bins"} <= set(options("sampler"))


@pytest.mark.parametrize("name", options("model"))
def test_model_options_build_field_nets(compose, name: str):
    cfg = compose([f"model={name}"], tiny=False)
    net = instantiate(cfg.model)
    assert isinstance(net, FieldNet)
    assert net.context >= 0


@pytest.mark.parametrize(
    "overrides, net, loss",
    [
        ([], "ProbabilisticNet", "OccupancyNLL"),  # the default network picks its loss
        (["model=twophase"], "TwoPhaseNet", "TwoPhaseLoss"),
        (["model=unet3d"], "UNet3d", "MSELoss"),
        (["model=resnet3d", "loss=huber"], "ResNet3d", "HuberLoss"),
        (["model=twophase", "loss=weighted_mse"], "TwoPhaseNet", "WeightedMSELoss"),
    ],
)
def test_model_and_loss_pairing(compose, overrides: list[str], net: str, loss: str):
    cfg = compose(overrides, tiny=False)
    assert cfg.model._target_.endswith(net) and cfg.loss._target_.endswith(loss)


@pytest.mark.parametrize("family", ["normal", "gumbel"])
def test_likelihood_follows_the_network_family(compose, family: str):
    assert compose([], tiny=False).model.family == "gumbel"
    cfg = compose([f"model.family={family}"], tiny=False)
    assert instantiate(cfg.model).family == family
    assert instantiate(cfg.loss).family == family


def test_probabilistic_default_draws_weighted_mass_bin_crops_and_selects_on_the_likelihood(
    compose,
):
    cfg = compose([], tiny=False)
    assert cfg.sampler._target_.endswith("MassBinSampler") and cfg.sampler.importance is True
    assert cfg.sampler.samples_per_epoch
    assert compose(["sampler=uniform"], tiny=False).sampler._target_.endswith("UniformSampler")
    assert cfg.optimized_metric == "val/loss"
    regression = compose(["model=twophase"], tiny=False)
    assert regression.sampler._target_.endswith("MassBinSampler")
    assert not regression.sampler.importance
    assert regression.optimized_metric == "val/pk_ratio_abs_err"


def test_mock_runs_score_two_unseen_realisations_by_default(compose):
    assert compose([], tiny=False).evaluation.realisations == 2
    assert compose(["data=mock_small"], tiny=False).evaluation.realisations == 0
    assert compose(["data=tng100"], tiny=False).evaluation.realisations == 0


@pytest.mark.parametrize("name", options("loss"))
def test_loss_options_instantiate(compose, name: str):
    loss = instantiate(compose([f"loss={name}"]).loss)
    assert isinstance(loss, torch.nn.Module) and loss.name


@pytest.mark.parametrize("name", options("optim"))
def test_optim_options_build_optimisers(compose, name: str):
    cfg = compose([f"optim={name}"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = instantiate(cfg.optim.optimizer)(params=params)
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert cfg.optim.interval in ("epoch", "step")
    if cfg.optim.scheduler is not None:
        # schedulers stepped per optimiser step also get the run's number of steps
        extra = {"total_steps": 100} if cfg.optim.interval == "step" else {}
        assert instantiate(cfg.optim.scheduler)(optimizer=optimizer, **extra) is not None


@pytest.mark.parametrize("name", options("sampler"))
def test_sampler_options_are_partials(compose, name: str):
    sampler = instantiate(compose([f"sampler={name}"]).sampler)
    assert callable(sampler)


@pytest.mark.parametrize("name", options("hod"))
def test_hod_options_instantiate(compose, name: str):
    hod = instantiate(compose([f"+hod@hods.extra={name}"]).hods.extra)
    assert hasattr(hod, "fit") and hasattr(hod, "paint_mean") and hod.name == name


def test_train_scores_every_kind_of_hod(compose):
    """The default report has the paper's HOD, the environment-aware one and the decorated one."""
    hods = {name: instantiate(node) for name, node in compose([]).hods.items()}
    assert {name: hod.name for name, hod in hods.items()} == {
        "binned": "binned", "binned_env": "binned_env", "decorated": "decorated"
    }  # fmt: skip
    assert [hod.needs_environment for hod in hods.values()] == [False, True, True]


@pytest.mark.parametrize("name", options("logger"))
def test_logger_options_instantiate_offline(compose, name: str):
    loggers = instantiate_group(compose([f"logger={name}"]).get("logger"))
    assert len(loggers) == {"none": 0, "csv": 1, "wandb": 2}[name]


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_options_compose(compose, name: str):
    cfg = compose([f"trainer={name}"])
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if name == "cpu":
        assert instantiate(cfg.trainer, logger=False).max_epochs == 1


@pytest.mark.parametrize("name", options("data"))
def test_data_options_compose(compose, name: str):
    extra = {
        "tng100": ["data.root=/nonexistent"],
        "camels": ["data.root=/nonexistent"],
        "fields": ["data.dm=a.npy", "data.subhalo=b.npy", "data.stellar=c.npy"],
    }
    cfg = compose([f"data={name}", *extra.get(name, [])])
    assert cfg.data._target_ == "dm2gal.data.FieldDataModule"
    assert OmegaConf.select(cfg, "data.source._target_")


@pytest.mark.parametrize("name", options("experiment"))
def test_experiments_compose(compose, name: str):
    assert compose([f"experiment={name}"]).task_name


@pytest.mark.parametrize("name", options("hparams_search"))
def test_sweeps_compose(compose, name: str):
    assert compose([f"hparams_search={name}"]).optimized_metric


def test_smoke_builds_data_module_model_and_trainer(compose):
    datamodule, module, trainer = build(compose())
    assert datamodule.context == module.net.context
    assert trainer.max_epochs == 1


def test_unknown_option_is_hydras_error(compose):
    with pytest.raises(ConfigCompositionException, match="model"):
        compose(["model=nonexistent"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.crop=-4", "data.crop"),
        ("data.source.box=0", "data.source.box"),
        ("data.source.grid=-8", "data.source.grid"),
        ("data.batch_size=0", "data.batch_size"),
        ("evaluation.calibration_voxels=-1", "evaluation.calibration_voxels"),
        ("evaluation.calibration_voxels=1.5", "evaluation.calibration_voxels"),
        ("sampler.bins=abc", "sampler.bins"),
        ("sampler.bins=0", "sampler.bins"),
        ("sampler.samples_per_epoch=2.5", "sampler.samples_per_epoch"),
        ("optim.optimizer.lr=-1", "optim.optimizer.lr"),
        ("optim.optimizer.lr=0", "optim.optimizer.lr"),
        ("optim.optimizer.lr=fast", "optim.optimizer.lr"),
        ("optim.optimizer.weight_decay=-1e-4", "optim.optimizer.weight_decay"),
    ],
)
def test_bad_values_name_the_key(compose, override: str, key: str):
    cfg = compose([override])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_config(cfg)


def test_sampler_rejects_a_non_integer_bin_count():
    from dm2gal.data.sampler import MassBinSampler

    with pytest.raises(ValueError, match=r"sampler\.bins: expected an integer >= 1, got 'abc'"):
        MassBinSampler(4, np.zeros(4), bins="abc")


def test_input_larger_than_the_box_fails_before_any_data(compose, tmp_path: Path):
    # unet3d has a context of 8 voxels: an 8-voxel crop needs 24^3 inputs, more than 16^3
    cfg = compose(["data.source.grid=16", "data.crop=8", f"paths.data_dir={tmp_path / 'd'}"])
    with pytest.raises(ValueError) as err:
        build(cfg)
    message = str(err.value)
    assert "'data.crop' = 8" in message and "'data.source.grid' = 16" in message
    assert "the network's context (8 voxels" in message
    assert not (tmp_path / "d").exists()  # no mock generated


def test_no_room_beside_the_held_out_cubes_fails_before_any_data(compose, tmp_path: Path):
    # the paper CNN's 65^3 inputs (context 32) and the paper split's guard band leave no training
    # crop on 128^3; on 256^3 the same lattice has room
    paper = [
        "model=paper_cnn",
        "model.channels=2",
        "logger=csv",
        f"paths.data_dir={tmp_path / 'd'}",
    ]
    with pytest.raises(ValueError, match=r"no 65\^3 training input on a 128\^3 grid stays clear"):
        build(compose(paper, tiny=False))
    assert not (tmp_path / "d").exists()
    datamodule, _, _ = build(compose([*paper, "data.source.grid=256"], tiny=False))
    assert datamodule.crop == 1 and datamodule.context == 32


REQUIRED = {
    "tng100": ["data.root=/nonexistent"],
    "camels": ["data.root=/nonexistent/IllustrisTNG/LH_0"],
    "camels_lh": ["data.root=/nonexistent/IllustrisTNG"],
    "fields": ["data.dm=a.npy", "data.subhalo=b.npy", "data.stellar=c.npy", "data.box=75"],
}


@pytest.mark.parametrize("name", options("data"))
def test_smoke_experiment_composes_with_every_data_option(compose, name: str):
    cfg = compose([f"data={name}", *REQUIRED.get(name, [])])
    assert cfg.task_name == "smoke" and cfg.data.crop == 8
    source = instantiate(data_module_config(cfg.data).source)  # reads and writes nothing
    assert cfg.data.source._target_.endswith(f".{type(source).__name__}")


def _arrays(tmp_path: Path, grid: int = 64) -> list[str]:
    rng = np.random.default_rng(3)
    out = []
    for name in ("dm", "subhalo", "stellar"):
        path = tmp_path / f"{name}.npy"
        np.save(path, rng.lognormal(20.0, 1.0, (grid,) * 3).astype(np.float32))
        out.append(f"data.{name}={path}")
    return out


def test_smoke_trains_on_own_arrays_with_their_box(compose, tmp_path: Path):
    cfg = compose(["data=fields", *_arrays(tmp_path), "data.box=40", "trainer.fast_dev_run=true",
                   f"paths.data_dir={tmp_path / 'd'}"])  # fmt: skip
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert datamodule.box == 40.0 and datamodule.grid == 64
    assert datamodule.splits.val.start == (44, 44, 44)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.box=-3", r"config key 'data\.box' must be a positive number, got -3"),
        ("data.source.box=50", r"'data\.box' = 40 and 'data\.source\.box' = 50 disagree"),
    ],
)
def test_a_bad_data_box_is_not_ignored(compose, tmp_path: Path, override: str, message: str):
    cfg = compose(["data=fields", *REQUIRED["fields"][:3], "data.box=40", override,
                   f"paths.data_dir={tmp_path / 'd'}"])  # fmt: skip
    with pytest.raises(ValueError, match=message):
        build(cfg)
    assert not (tmp_path / "d").exists()
