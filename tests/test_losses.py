"""Losses against hand computations on tiny examples."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dm2gal.train.losses import HuberLoss, MSELoss, OccupancyNLL, TwoPhaseLoss, WeightedMSELoss

CONF = Path(__file__).resolve().parents[1] / "conf"


def _field(values: list[float]) -> torch.Tensor:
    """A (1, 1, 1, 1, len) field holding ``values``."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, 1, -1)


def _batch(target: list[float], occupied: list[bool] | None = None) -> dict[str, torch.Tensor]:
    t = _field(target)
    occ = t > 0 if occupied is None else torch.tensor(occupied).reshape(t.shape)
    return {"target": t, "occupied": occ}


def test_mse_and_huber_by_hand() -> None:
    batch = _batch([0.0, 0.0, 1.0, -1.0])
    out = _field([0.5, -3.0, 1.0, -1.0])
    assert MSELoss()(out, batch).item() == pytest.approx((0.25 + 9.0) / 4)
    # delta=1: 0.5 * 0.5^2 for the small error, 1 * (3 - 0.5) for the large one
    assert HuberLoss(delta=1.0)(out, batch).item() == pytest.approx((0.125 + 2.5) / 4)
    # delta=4: both quadratic
    assert HuberLoss(delta=4.0)(out, batch).item() == pytest.approx((0.125 + 4.5) / 4)
    assert (MSELoss.name, HuberLoss.name) == ("mse", "huber")


def test_weighted_mse_by_hand() -> None:
    # batch range [0, 1] in 2 bins: three voxels in bin 0, one in bin 1 -> mean of bin MSEs
    batch = _batch([0.0, 0.0, 0.0, 1.0])
    loss = WeightedMSELoss(bins=2)
    assert loss(_field([1.0, 0.0, 0.0, 1.0]), batch).item() == pytest.approx((1 / 3 + 0) / 2)
    assert loss(_field([0.0, 0.0, 0.0, 3.0]), batch).item() == pytest.approx((0 + 4) / 2)
    # fixed edges [0, 4] in 2 bins: all four in bin 0 -> plain MSE
    fixed = WeightedMSELoss(bins=2, low=0.0, high=4.0)
    assert fixed(_field([0.0, 0.0, 0.0, 3.0]), batch).item() == pytest.approx(4 / 4)
    # values outside [low, high] fall in the end bins: 9 joins bin 1, -5 joins bin 0
    wide = _batch([-5.0, 0.0, 3.0, 9.0])
    out = _field([-4.0, 0.0, 3.0, 7.0])  # squared errors 1, 0, 0, 4
    assert fixed(out, wide).item() == pytest.approx((1 / 2 + 4 / 2) / 2)
    # a constant target is one bin
    flat = _batch([2.0, 2.0])
    assert loss(_field([2.0, 4.0]), flat).item() == pytest.approx(2.0)


def test_twophase_by_hand() -> None:
    logits = [2.0, -1.0, 0.0, 1.0]
    values = [0.5, 9.0, 9.0, 9.0]
    target = [1.0, -1.0, -1.0, -1.0]
    occupied = [True, False, False, False]
    output = torch.cat([_field(logits), _field(values)], dim=1)
    batch = _batch(target, occupied)

    def softplus(z: float) -> float:
        return math.log1p(math.exp(z))

    # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
    def bce(pos_weight: float) -> float:
        return (pos_weight * softplus(-2.0) + softplus(-1.0) + softplus(0.0) + softplus(1.0)) / 4

    mse = (0.5 - 1.0) ** 2  # occupied voxels only
    auto = TwoPhaseLoss()  # pos_weight = 3 empty / 1 occupied
    terms = auto.components(output, batch)
    assert terms["bce"].item() == pytest.approx(bce(3.0))
    assert terms["mse"].item() == pytest.approx(mse)
    assert auto(output, batch).item() == pytest.approx(bce(3.0) + mse)
    weighted = TwoPhaseLoss(bce_weight=0.5, mse_weight=2.0, pos_weight=1.0)
    assert weighted(output, batch).item() == pytest.approx(0.5 * bce(1.0) + 2.0 * mse)
    # no occupied voxel: the regression term is 0, not NaN
    empty = _batch(target, [False] * 4)
    assert torch.isfinite(auto(output, empty))
    assert auto.components(output, empty)["mse"].item() == 0.0


def test_bad_shapes_and_arguments_raise() -> None:
    batch = _batch([0.0, 1.0])
    with pytest.raises(ValueError, match="'mse': output shape"):
        MSELoss()(_field([0.0, 1.0, 2.0]), batch)
    with pytest.raises(ValueError, match=r"'twophase': expected output \(B, 2"):
        TwoPhaseLoss()(_field([0.0, 1.0]), batch)
    with pytest.raises(ValueError, match="low < high"):
        WeightedMSELoss(low=1.0, high=0.0)
    with pytest.raises(ValueError, match="delta"):
        HuberLoss(delta=0.0)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("mse", MSELoss),
        ("huber", HuberLoss),
        ("weighted_mse", WeightedMSELoss),
        ("twophase", TwoPhaseLoss),
        ("nll", OccupancyNLL),
    ],
)
def test_loss_configs_instantiate(name: str, cls: type) -> None:
    loss = instantiate(OmegaConf.load(CONF / "loss" / f"{name}.yaml"))
    assert type(loss) is cls and loss.name == name


@pytest.mark.parametrize(
    "loss",
    [MSELoss(), HuberLoss(delta=0.5), WeightedMSELoss(bins=3), TwoPhaseLoss(), OccupancyNLL()],
    ids=lambda loss: loss.name,
)
def test_invalid_voxels_do_not_count(loss):
    """Voxels outside ``batch["valid"]`` (tiles past a held-out region) change nothing."""
    g = torch.Generator().manual_seed(0)
    channels = {"twophase": 2, "nll": 7}.get(loss.name, 1)
    output = torch.randn(2, channels, 4, 4, 4, generator=g)
    target = torch.randn(2, 1, 4, 4, 4, generator=g)
    valid = torch.zeros(2, 1, 4, 4, 4, dtype=bool)
    valid[..., :2] = True
    batch = {"target": target, "occupied": target > 0, "valid": valid}
    garbage = output.clone()
    garbage[..., 2:] = 1e3
    assert torch.allclose(loss(output, batch), loss(garbage, batch))
    cut = {k: v[..., :2] for k, v in batch.items()}
    assert torch.allclose(loss(output, batch), loss(output[..., :2], cut), rtol=1e-6)
