"""FiLM conditioning on universe parameters: identity at start, none = today's networks, the
normalisation by training ranges, the errors, and a fit that needs the parameters."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from dm2gal.errors import ConfigError
from dm2gal.models import (
    PaperNet,
    ProbabilisticNet,
    ResNet3d,
    TwoPhaseNet,
    UNet3d,
    count_parameters,
)
from dm2gal.models.conditioning import FiLM
from dm2gal.train.losses import MSELoss
from dm2gal.train.module import Dm2galModule

NAMES = ("Om0", "sigma8")
RANGES = {"Om0": (0.2, 0.4), "sigma8": (0.6, 1.0)}
SMALL = {
    "unet3d": (lambda **kw: UNet3d(channels=4, levels=1, convs=1, **kw), 2),
    "resnet3d": (lambda **kw: ResNet3d(channels=4, blocks=2, **kw), 3),
    "probabilistic": (lambda **kw: ProbabilisticNet(channels=4, levels=1, convs=1, **kw), 2),
    "twophase": (lambda **kw: TwoPhaseNet(channels=4, levels=1, convs=1, **kw), 2),
    "paper_cnn": (lambda **kw: PaperNet(channels=2, **kw), 1),
}


def _input(context: int, n: int, batch: int = 3) -> torch.Tensor:
    side = n + 2 * context
    return torch.randn(batch, 2, side, side, side, generator=torch.Generator().manual_seed(1))


def _params(batch: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.tensor([0.2, 0.6]) + torch.rand(batch, 2, generator=g) * torch.tensor([0.2, 0.4])


def _conditioned(key: str) -> torch.nn.Module:
    make, _ = SMALL[key]
    torch.manual_seed(0)
    net = make(conditioning="film", parameters=NAMES)
    net.film.set_ranges(RANGES)
    return net.eval()


def test_unet_without_conditioning_has_the_layer_arithmetic_parameter_count() -> None:
    """UNet3d(channels=C, levels=1, convs=2), 2 -> 1 channels, counted by hand: 3^3 convs
    without bias, a BatchNorm (2C) after every conv, 2^3 down and up convs, a 1^3 head."""
    c = 5
    encoder = 27 * 2 * c + 27 * c * c + 2 * 2 * c
    resample = 2 * (8 * c * c + 2 * c)
    bottom = 2 * (27 * c * c + 2 * c)
    decoder = 27 * 2 * c * c + 27 * c * c + 2 * 2 * c
    head = c + 1
    net = UNet3d(channels=c, levels=1, convs=2, conditioning="none", parameters=NAMES)
    assert count_parameters(net) == encoder + resample + bottom + decoder + head
    assert not any("film" in key for key in net.state_dict())
    assert net.parameter_names == ()


@pytest.mark.parametrize("key", sorted(SMALL))
def test_untrained_film_is_the_unconditioned_network(key: str) -> None:
    """Same seed: the trunk's weights are those of conditioning=none (FiLM is built last), and
    an untrained FiLM (zero last layer) leaves every output as the unconditioned one's."""
    make, n = SMALL[key]
    torch.manual_seed(0)
    plain = make().eval()
    film = _conditioned(key)
    film_state = film.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.equal(film_state[name], value), name
    extra = set(film_state) - set(plain.state_dict())
    assert extra and all(name.startswith("film.") for name in extra)
    x = _input(plain.context, n)
    with torch.no_grad():
        assert torch.allclose(film(x, _params()), plain(x), atol=1e-6)
        assert torch.allclose(film.infer(x, _params()), plain.infer(x), atol=1e-6)


def test_probabilistic_draws_take_the_parameters() -> None:
    net = _conditioned("probabilistic")
    x, noise = _input(net.context, 2), torch.rand(3, 2, 3, 2, 2, 2)
    with torch.no_grad():
        draws = net.infer_draws(x, noise, _params())
    assert draws.shape == (3, 3, 2, 2, 2)
    with pytest.raises(ConfigError, match="got no parameters"):
        net.infer_draws(x, noise)


def test_parameters_are_normalised_to_minus_one_one_by_the_training_ranges() -> None:
    film = FiLM(NAMES, [4])
    film.set_ranges(RANGES)
    raw = torch.tensor([[0.2, 1.0], [0.3, 0.7], [0.5, 0.6]])
    expected = torch.tensor([[-1.0, 1.0], [0.0, -0.5], [2.0, -1.0]])
    assert torch.allclose(film.normalise(raw), expected, atol=1e-6)
    assert film.ranges == RANGES


def test_ranges_travel_in_the_state_dict() -> None:
    net = _conditioned("resnet3d")
    fresh = ResNet3d(channels=4, blocks=2, conditioning="film", parameters=NAMES)
    assert torch.isnan(fresh.film.low).all()
    fresh.load_state_dict(net.state_dict())
    assert fresh.film.ranges == RANGES


def test_errors_name_what_is_missing() -> None:
    net = _conditioned("unet3d")
    x = _input(net.context, 2)
    with pytest.raises(ConfigError, match=r"conditioned on \['Om0', 'sigma8'\].*no parameters"):
        net(x)
    with pytest.raises(ConfigError, match="model.conditioning=none"):
        UNet3d(channels=4, levels=1, convs=1)(x, _params())
    with pytest.raises(ValueError, match=r"expected parameters \(B, 2\)"):
        net(x, torch.zeros(3, 3))
    unset = UNet3d(channels=4, levels=1, convs=1, conditioning="film", parameters=NAMES)
    with pytest.raises(ValueError, match="training ranges not set"):
        unset(x, _params())
    with pytest.raises(ConfigError, match="model.conditioning: expected one of"):
        UNet3d(conditioning="films")
    with pytest.raises(ConfigError, match="model.parameters: model.conditioning=film needs"):
        UNet3d(conditioning="film")
    with pytest.raises(ConfigError, match=r"no training range for \['sigma8'\]"):
        net.film.set_ranges({"Om0": (0.2, 0.4)})
    with pytest.raises(ConfigError, match=r"range of \['Om0'\] is empty"):
        net.film.set_ranges({"Om0": (0.4, 0.4), "sigma8": (0.6, 1.0)})


def _amplitude_batch(
    g: torch.Generator, context: int, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, amplitudes ``a`` uniform in [0, 2] (one per crop) and targets ``a * input[0]``
    (the 4^3 centre)."""
    side = 4 + 2 * context
    x = torch.randn(batch, 2, side, side, side, generator=g)
    a = 2 * torch.rand(batch, 1, generator=g)
    crop = slice(context, side - context)
    return x, a, a[:, :, None, None, None] * x[:, :1, crop, crop, crop]


def _fit_error(net: torch.nn.Module, steps: int = 80) -> float:
    """Fit the amplitude batches; return the mean squared error on a fresh batch over the
    target's mean square."""
    g = torch.Generator().manual_seed(3)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-2)
    conditioned = bool(net.parameter_names)
    for _ in range(steps):
        x, a, target = _amplitude_batch(g, net.context, 8)
        loss = torch.mean(((net(x, a) if conditioned else net(x)) - target) ** 2)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x, a, target = _amplitude_batch(g, net.context, 64)
    with torch.no_grad():
        out = net.eval()(x, a) if conditioned else net.eval()(x)
    return float(torch.mean((out - target) ** 2) / torch.mean(target**2))


@pytest.fixture
def one_thread():
    """Tiny convolutions run faster on one thread than on a shared machine's many."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_film_fits_an_amplitude_set_by_the_parameter_and_the_plain_net_cannot() -> None:
    """Without the parameter the best prediction is E[a] x: an error of Var(a) / E[a^2] = 1/4
    of the target's power; the FiLM network must get far below that floor."""
    torch.manual_seed(0)
    plain = ResNet3d(channels=4, blocks=0)
    torch.manual_seed(0)
    film = ResNet3d(channels=4, blocks=0, conditioning="film", parameters=["A"])
    film.film.set_ranges({"A": (0.0, 2.0)})
    plain_error, film_error = _fit_error(plain), _fit_error(film)
    assert plain_error > 0.2  # the floor 0.25, up to sampling noise
    assert film_error < 0.05


def _module(net: torch.nn.Module) -> Dm2galModule:
    return Dm2galModule(net, MSELoss(), optimizer=partial(torch.optim.SGD, lr=0.1))


def _batch(net: torch.nn.Module, params: bool) -> dict[str, torch.Tensor]:
    x = _input(net.context, 2)
    batch = {"input": x, "target": torch.zeros(3, 1, 2, 2, 2)}
    batch["occupied"] = torch.zeros_like(batch["target"], dtype=torch.bool)
    return batch | ({"params": _params()} if params else {})


def test_module_passes_params_and_refuses_a_batch_that_disagrees() -> None:
    conditioned, plain = _module(_conditioned("resnet3d")), _module(ResNet3d(channels=4, blocks=2))
    with torch.no_grad():
        batch = _batch(conditioned.net, params=True)
        expected = conditioned.net.infer(batch["input"], batch["params"])
        assert torch.equal(conditioned(batch["input"], batch["params"]), expected)
        assert torch.isfinite(conditioned.training_step(batch, 0))
        with pytest.raises(ConfigError, match=r"conditioned on \['Om0', 'sigma8'\].*has no"):
            conditioned.training_step(_batch(conditioned.net, params=False), 0)
        with_params = _batch(plain.net, params=True)  # one universe's: an unconditioned net
        assert torch.equal(  # ignores them
            plain.training_step(with_params, 0),
            plain.training_step(_batch(plain.net, params=False), 0),
        )


def test_module_records_the_training_ranges_of_the_data() -> None:
    torch.manual_seed(0)
    net = ResNet3d(channels=4, blocks=1, conditioning="film", parameters=NAMES)
    module = _module(net)
    data = SimpleNamespace(parameter_names=list(NAMES), parameter_ranges=RANGES)
    module.check_parameters(data, record_ranges=True)
    assert net.film.ranges == RANGES
    other = SimpleNamespace(parameter_names=["Om0"], parameter_ranges={"Om0": (0.2, 0.4)})
    with pytest.raises(ConfigError, match=r"conditioned on \['Om0', 'sigma8'\].*gives parameters"):
        module.check_parameters(other, record_ranges=True)
    plain = _module(ResNet3d(channels=4, blocks=1))
    with pytest.raises(ConfigError, match=r"conditioned on \[\].*gives parameters \['Om0'\]"):
        plain.check_parameters(other, record_ranges=False)
    # one parameter point (a hypercube's centre universe alone): an unconditioned net trains
    plain.check_parameters(
        SimpleNamespace(parameter_names=["Om0"], parameter_ranges={"Om0": (0.3, 0.3)}), True
    )
