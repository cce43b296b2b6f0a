"""Model zoo: declared shapes and contexts, the paper's parameter count, overfitting one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dm2gal.errors import ConfigError
from dm2gal.models import (
    FieldNet,
    PaperNet,
    ProbabilisticNet,
    ResNet3d,
    TwoPhaseNet,
    UNet3d,
    count_parameters,
)
from dm2gal.train.losses import MSELoss, OccupancyNLL, TwoPhaseLoss

CONF = Path(__file__).resolve().parents[1] / "conf"

# small configurations and an output side each can produce
SMALL = {
    "unet3d": (lambda: UNet3d(channels=4, levels=2, convs=2), 4),
    "unet3d_l1": (lambda: UNet3d(channels=4, levels=1, convs=1), 2),
    "resnet3d": (lambda: ResNet3d(channels=4, blocks=2), 3),
    "twophase": (lambda: TwoPhaseNet(channels=4, levels=1, convs=2), 2),
    "probabilistic": (lambda: ProbabilisticNet(channels=4, levels=1, convs=2, components=2), 2),
    "paper": (lambda: PaperNet(channels=1), 1),
}


def _input(net: FieldNet, n: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    side = n + 2 * net.context
    return torch.randn(batch, 2, side, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("key", sorted(SMALL))
def test_declared_output_shape(key: str) -> None:
    make, n = SMALL[key]
    net = make().eval()
    out_channels = {"twophase": 2, "probabilistic": 7}.get(key, 1)
    with torch.no_grad():
        x = _input(net, n, batch=3)
        assert net(x).shape == (3, out_channels, n, n, n)
        assert net.infer(x).shape == (3, 1, n, n, n)


@pytest.mark.parametrize(
    ("levels", "convs", "context", "valid"),
    [(2, 2, 20, {4, 8, 12}), (1, 2, 8, {2, 4, 6, 8, 10, 12}), (2, 1, 10, {2, 6, 10})],
)
def test_unet_context_and_valid_sides(levels: int, convs: int, context: int, valid: set) -> None:
    """Contexts and valid sides worked out by hand from the layer arithmetic."""
    net = UNet3d(channels=2, levels=levels, convs=convs).eval()
    assert net.context == context
    assert {n for n in range(-1, 13) if net.valid_output(n)} == valid
    with torch.no_grad():
        for n in range(1, 9):
            x = _input(net, n, batch=1)
            if n in valid:
                assert net(x).shape[-3:] == (n, n, n)
            else:
                with pytest.raises(
                    ValueError, match=rf"UNet3d: input side {x.shape[-1]}.*n % {net.period}"
                ):
                    net(x)


def test_resnet_receptive_field_is_the_declared_context() -> None:
    """Output voxel (0,0,0) depends on exactly the input window [0, 2c]^3, corners included."""
    make, n = SMALL["resnet3d"]
    torch.manual_seed(0)
    net = make().eval()
    x = _input(net, n, batch=1).requires_grad_(True)
    net(x)[0, 0, 0, 0, 0].backward()
    grad = x.grad.abs().sum(dim=(0, 1))
    c2 = 2 * net.context
    assert grad[c2 + 1 :].sum() == 0 and grad[:, c2 + 1 :].sum() == 0
    assert grad[:, :, c2 + 1 :].sum() == 0
    assert grad[0, 0, 0] > 0 and grad[c2, c2, c2] > 0


def test_unet_is_shift_equivariant_with_its_period() -> None:
    """Two output crops of a larger output equal the outputs of the matching input crops when
    they sit a multiple of ``period`` apart: skips are centred, the context is exact."""
    torch.manual_seed(0)
    net = UNet3d(channels=3, levels=2, convs=2).eval()
    n, p, s = 4, net.period, 4 + 2 * net.context
    assert p == 4
    x = _input(net, n + p, batch=1)
    with torch.no_grad():
        full = net(x)
        for o in (0, p):
            part = net(x[..., o : o + s, o : o + s, o : o + s])
            torch.testing.assert_close(part, full[..., o : o + n, o : o + n, o : o + n])


def test_paper_net_parameter_count_and_shape() -> None:
    net = PaperNet(channels=64)
    assert count_parameters(net) == 13_865_601
    assert (net.context, net.fixed_output) == (32, 1)
    assert net.valid_output(1) and not net.valid_output(2)
    small = PaperNet(channels=1).eval()
    with torch.no_grad():
        assert small(torch.zeros(2, 2, 65, 65, 65)).shape == (2, 1, 1, 1, 1)


@pytest.mark.parametrize(
    ("net", "shape", "match"),
    [
        (PaperNet(channels=1), (1, 2, 64, 64, 64), "PaperNet: input side 64 .*only side 1"),
        (PaperNet(channels=1), (1, 3, 65, 65, 65), "expected 2 input channels"),
        (ResNet3d(channels=2, blocks=1), (1, 2, 6, 6, 6), "output side 0"),
        (ResNet3d(channels=2, blocks=1), (1, 2, 8, 8, 9), r"expected input \(B, C, s, s, s\)"),
        (UNet3d(channels=2), (1, 2, 45, 45, 45), "output side 5 .*n % 4 == 0"),
    ],
)
def test_invalid_input_raises(net: FieldNet, shape: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


def test_invalid_constructor_arguments_raise() -> None:
    with pytest.raises(ConfigError, match=r"model.out_channels \(TwoPhaseNet\): must be 1"):
        TwoPhaseNet(out_channels=2)
    with pytest.raises(ConfigError, match=r"model.out_channels \(ProbabilisticNet\): must be 1"):
        ProbabilisticNet(out_channels=2)
    with pytest.raises(ValueError, match="levels"):
        UNet3d(levels=0)
    with pytest.raises(ValueError, match="blocks"):
        ResNet3d(blocks=-1)


@pytest.mark.parametrize("logit", [-1.0, 1.0])
def test_twophase_infer_combines_heads(logit: float) -> None:
    """With a constant head (logit, value=3), infer gives the value where sigmoid(logit) >= 0.5
    and the empty value elsewhere."""
    net = TwoPhaseNet(channels=2, levels=1, convs=1, empty_value=-2.5).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([logit, 3.0]))
        out = net.infer(_input(net, 2))
    assert torch.all(out == (3.0 if logit > 0 else -2.5))


def _overfit(net: FieldNet, loss_fn: torch.nn.Module, n: int, batch: int, steps: int) -> list:
    """Adam (lr 1e-2) on one fixed batch whose target is a smooth function of the input."""
    torch.manual_seed(0)
    x = _input(net, n, batch=batch, seed=1)
    c = net.context
    core = x[:, :, c : c + n, c : c + n, c : c + n]
    target = core[:, :1] ** 2 + core[:, 1:] - 1.0
    data = {"target": target, "occupied": target > 0}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(net(x), data)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# (network, loss, output side, batch, steps): the smallest networks that keep each structure
OVERFIT = {
    "unet3d": (lambda: UNet3d(channels=4, levels=2, convs=1), MSELoss(), 2, 4, 60),
    "resnet3d": (lambda: ResNet3d(channels=4, blocks=2), MSELoss(), 3, 4, 80),
    "twophase": (lambda: TwoPhaseNet(channels=4, levels=1, convs=1), TwoPhaseLoss(), 2, 4, 80),
    "probabilistic": (
        lambda: ProbabilisticNet(channels=4, levels=1, convs=1),
        OccupancyNLL(),
        2,
        4,
        80,
    ),
    # 65^3 inputs make every step cost seconds on one CPU core
    "paper": (lambda: PaperNet(channels=2), MSELoss(), 1, 2, 40),
}


@pytest.mark.parametrize(
    "key",
    [
        "unet3d",
        "resnet3d",
        "twophase",
        "probabilistic",
        pytest.param("paper", marks=pytest.mark.slow),
    ],
)
def test_overfits_one_batch(key: str) -> None:
    make, loss_fn, n, batch, steps = OVERFIT[key]
    torch.manual_seed(0)
    losses = _overfit(make(), loss_fn, n, batch, steps)
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("name", ["unet3d", "resnet3d", "paper_cnn", "twophase", "probabilistic"])
def test_model_configs_instantiate(name: str) -> None:
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    cfg = cfg.model if "model" in cfg else cfg  # a global-package option (it also picks a loss)
    net = instantiate(cfg)
    assert isinstance(net, FieldNet)
    assert (cfg.in_channels, cfg.out_channels) == (2, 1)
    if name == "unet3d":  # the CPU default: small, moderate context, 16^3 targets possible
        assert net.context <= 20 and net.valid_output(16)
        assert count_parameters(net) < 100_000
