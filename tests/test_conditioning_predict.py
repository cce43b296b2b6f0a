"""A conditioned network at prediction time: parameters from the command line or the store's
metadata, refused outside the training ranges, and bound to the network so that whole-box
prediction equals the network applied to the periodically padded box."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.infer.exported import TrainedModel, export_model, load_exported
from dm2gal.infer.parameters import BoundDrawsNet, bind_parameters
from dm2gal.infer.predict import PredictOptions, predict_fields
from dm2gal.io.parameters import parameter_attrs, read_parameters
from dm2gal.io.recipe import FieldRecipe, Recipe, SimInfo
from dm2gal.io.store import FieldStore
from dm2gal.models import ProbabilisticNet, ResNet3d

NAMES = ("Om0", "sigma8")
RANGES = {"Om0": (0.2, 0.4), "sigma8": (0.6, 1.0)}
GRID = 12


def _film_net() -> ResNet3d:
    """A conditioned ResNet whose FiLM is not the identity (random last layer)."""
    torch.manual_seed(0)
    net = ResNet3d(channels=3, blocks=1, conditioning="film", parameters=NAMES)
    net.film.set_ranges(RANGES)
    torch.nn.init.normal_(net.film.mlp[-1].weight, std=0.5)
    return net.eval()


def _store(tmp_path, parameters: dict | None) -> FieldStore:
    store = FieldStore(tmp_path / "universe")
    store.init(30.0, GRID, **parameter_attrs(parameters or {}))
    return store


def test_values_from_the_store_and_the_command_line(tmp_path) -> None:
    net = _film_net()
    store = _store(tmp_path, {"Om0": 0.3, "sigma8": 0.8, "env_dex": 0.1})
    assert read_parameters(store) == {"Om0": 0.3, "sigma8": 0.8, "env_dex": 0.1}
    assert bind_parameters(net, store, {}).values == {"Om0": 0.3, "sigma8": 0.8}
    given = {"Om0": 0.25, "sigma8": None, "A_SN1": None}  # null: not given (the config's)
    assert bind_parameters(net, store, given).values == {"Om0": 0.25, "sigma8": 0.8}
    assert bind_parameters(net, None, {"Om0": 0.2, "sigma8": 1.0}).values == {
        "Om0": 0.2,
        "sigma8": 1.0,
    }


def test_values_outside_the_training_range_are_refused_unless_allowed(tmp_path) -> None:
    net, store = _film_net(), _store(tmp_path, {"Om0": 0.3, "sigma8": 0.8})
    with pytest.raises(
        ConfigError, match=r"params.Om0 = 0.5 is outside the training range \[0.2, 0.4\]"
    ):
        bind_parameters(net, store, {"Om0": 0.5})
    assert bind_parameters(net, store, {"Om0": 0.5}, allow_extrapolation=True).values["Om0"] == 0.5
    with pytest.raises(ConfigError, match=r"params.sigma8: .* no value for sigma8 .*meta.json"):
        bind_parameters(net, _store(tmp_path / "bare", None), {"Om0": 0.3})
    with pytest.raises(ConfigError, match=r"params: \['w0'\] are not parameters"):
        bind_parameters(net, store, {"w0": -1.0})
    with pytest.raises(ConfigError, match="params.Om0: expected a number, got 'high'"):
        bind_parameters(net, store, {"Om0": "high"})
    with pytest.raises(ConfigError, match=r"params: \['Om0'\] given, but the network is not"):
        bind_parameters(ResNet3d(channels=3, blocks=1), store, {"Om0": 0.3})
    plain = ResNet3d(channels=3, blocks=1)
    assert bind_parameters(plain, store, {"Om0": None}) is plain


def test_bound_network_predicts_the_whole_box_as_the_network_on_the_padded_box() -> None:
    """Tiled whole-box prediction of a bound network equals one forward pass of the
    conditioned network on the periodically padded box with the parameters."""
    net = _film_net()
    rng = np.random.default_rng(0)
    fields = [rng.lognormal(2.0, 1.0, (GRID,) * 3).astype(np.float32) for _ in range(2)]
    transform = FieldTransform([2.0, 2.0], [1.0, 1.0], 3.0, 0.3)
    bound = bind_parameters(net, None, {"Om0": 0.35, "sigma8": 0.7})
    box = Region((0, 0, 0), (GRID,) * 3, GRID)
    got = predict_fields(bound, transform, fields, box, PredictOptions(tile=4, progress=False))
    c = net.context
    padded = torch.from_numpy(np.stack([np.pad(f, c, mode="wrap") for f in fields]))
    with torch.no_grad():
        x = transform.forward_input(padded)[None]
        params = torch.tensor([[0.35, 0.7]])
        want = transform.inverse_prediction(net.infer(x, params)).clamp(min=0)[0, 0].numpy()
        other = transform.inverse_prediction(net.infer(x, params + 0.05)).clamp(min=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, other[0, 0].numpy(), rtol=1e-3)  # the parameters matter


def test_a_bound_probabilistic_network_draws() -> None:
    torch.manual_seed(0)
    net = ProbabilisticNet(channels=3, levels=1, convs=1, conditioning="film", parameters=NAMES)
    net.film.set_ranges(RANGES)
    bound = bind_parameters(net.eval(), None, {"Om0": 0.3, "sigma8": 0.8})
    assert isinstance(bound, BoundDrawsNet)
    side = 2 + 2 * net.context
    x, noise = torch.randn(2, 2, side, side, side), torch.rand(2, 1, 3, 2, 2, 2)
    with torch.no_grad():
        want = net.infer_draws(x, noise, torch.tensor([[0.3, 0.8]] * 2))
        assert torch.allclose(bound.infer_draws(x, noise), want)


def test_an_exported_conditioned_network_keeps_its_ranges(tmp_path) -> None:
    """The model card lists the training ranges; the weights carry them; the loaded network
    predicts as the original for the same parameters."""
    net = _film_net()
    architecture = {"_target_": "dm2gal.models.ResNet3d", "channels": 3, "blocks": 1}
    architecture |= {"conditioning": "film", "parameters": list(NAMES)}
    model = TrainedModel(
        net=net,
        architecture=architecture,
        transform=FieldTransform([2.0, 2.0], [1.0, 1.0], 3.0, 0.3),
        recipe=Recipe(FieldRecipe(), SimInfo(30.0, 0.0, 0.3, 0.7, 1.0e9, "own_fof"), 30.0 / GRID),
        options=PredictOptions(tile=4),
    )
    out = export_model(model, tmp_path / "exported")
    card = json.loads((out / "model_card.json").read_text())
    assert card["parameter_ranges"] == {name: list(r) for name, r in RANGES.items()}
    loaded = load_exported(out)
    assert loaded.net.film.ranges == RANGES and "parameter_ranges" not in loaded.card
    x, params = torch.randn(2, 2, 8, 8, 8), torch.tensor([[0.3, 0.9], [0.25, 0.7]])
    with torch.no_grad():
        assert torch.equal(loaded.net.infer(x, params), net.infer(x, params))
