"""What a conditioned network bound to one universe gives beyond its mean field: coherent
(copula) draws, the parameters its predictions record, the recipe of a mock universe's store,
and FiLM on the two-phase and paper networks."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.infer.copula_fit import fit_copula, fit_region_copula
from dm2gal.infer.exported import TrainedModel
from dm2gal.infer.parameters import bind_parameters
from dm2gal.infer.predict import PredictOptions, predict_fields, predict_store
from dm2gal.infer.recipe import store_recipe, training_recipe
from dm2gal.io.parameters import read_parameters
from dm2gal.io.recipe import FieldRecipe, Recipe, SimInfo
from dm2gal.io.store import FieldStore, StoreError
from dm2gal.models import PaperNet, ProbabilisticNet, ResNet3d, TwoPhaseNet
from dm2gal.paint.pipeline import PaintOptions, paint_run
from dm2gal.paint.slabs import paint_slab
from dm2gal.paint.sources import MockSource
from dm2gal.paint.trust import differences
from dm2gal.sim.mock import MockUniverse

NAMES = ("Om0", "sigma8")
RANGES = {"Om0": (0.2, 0.4), "sigma8": (0.6, 1.0)}
GRID = 12
TRANSFORM = FieldTransform([2.0, 2.0], [1.0, 1.0], 1.5, 1.0, target_max=1e11)
INPUTS = ["dm", "subhalo"]


@pytest.fixture(scope="module")
def universe(tmp_path_factory) -> tuple[MockUniverse, FieldStore]:
    """A tiny hypercube universe (32 Mpc/h, 16^3 particles and voxels) recording Om0, sigma8
    and env_dex, and its store."""
    mock = MockUniverse(box=32.0, particles=16, grid=16, seed=3, steps=5,
                        cache_dir=tmp_path_factory.mktemp("mock"),
                        cosmology={"Om0": 0.28, "H0": 70.0, "sigma8": 0.8},
                        galaxies={"env_dex": 0.2},
                        parameter_names=("Om0", "sigma8", "env_dex"))  # fmt: skip
    return mock, mock.build()


def _fields(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Two lognormal input fields and a sparse stellar-mass field (Msun/h per voxel) whose
    galaxies are shared with a neighbour voxel along each axis (correlated residuals, as
    cloud-in-cell gives)."""
    rng = np.random.default_rng(seed)
    inputs = [rng.lognormal(2.0, 1.0, (GRID,) * 3).astype(np.float32) for _ in range(2)]
    occupied = rng.random((GRID,) * 3) < 0.1
    galaxies = np.where(occupied, rng.lognormal(20.0, 1.0, (GRID,) * 3), 0.0)
    target = galaxies + sum(np.roll(galaxies, 1, axis=a) for a in range(3))
    return inputs, target.astype(np.float32)


def _probabilistic() -> ProbabilisticNet:
    """A conditioned probabilistic network whose FiLM is not the identity."""
    torch.manual_seed(0)
    net = ProbabilisticNet(channels=3, levels=1, convs=1, conditioning="film", parameters=NAMES)
    net.film.set_ranges(RANGES)
    net.set_target_transform(TRANSFORM)
    torch.nn.init.normal_(net.film.mlp[-1].weight, std=0.5)
    return net.eval()


def _law(net: ProbabilisticNet, inputs: list[np.ndarray], region: Region, params: list[float]):
    """The per-voxel laws on the cube ``region`` from the unbound network, given the
    parameters explicitly (one forward pass on the region widened by the context)."""
    c, side = net.context, region.size[0]
    raw = np.stack([read_crop(f, [s - c for s in region.start], side + 2 * c) for f in inputs])
    x = TRANSFORM.forward_input(torch.from_numpy(raw))[None]
    with torch.no_grad():
        return net.distribution(net(x, torch.tensor([params], dtype=torch.float64)))


def test_a_bound_probabilistic_network_gives_fitted_copula_draws_of_its_universe() -> None:
    """The copula fitted through the bound network is the one fitted to the unbound network's
    laws at the same parameters; its whole-box draws are the unbound network's quantiles of
    the copula's uniforms; other parameters give other draws."""
    net, (inputs, target) = _probabilistic(), _fields()
    values = {"Om0": 0.35, "sigma8": 0.7}
    bound = bind_parameters(net, None, values)
    region = Region((2, 2, 2), (8, 8, 8), GRID)
    kernel = fit_region_copula(bound, TRANSFORM, inputs, target, region, radius=1)
    truth = torch.from_numpy(read_crop(target, region.start, 8))[None, None]
    want = fit_copula(_law(net, inputs, region, [0.35, 0.7]), truth, 1, region.start, GRID)
    assert (kernel.coherent, kernel.width) == (want.coherent, want.width)
    assert kernel.fit["draw_residual_correlation"] == want.fit["draw_residual_correlation"]

    box = Region((0, 0, 0), (GRID,) * 3, GRID)
    options = PredictOptions(tile=4, progress=False, copula=kernel)
    mean, draw = predict_fields(bound, TRANSFORM, inputs, box, options, seeds=[3])
    padded = torch.from_numpy(np.stack([np.pad(f, net.context, mode="wrap") for f in inputs]))
    noise = kernel.uniform_noise(3, (0, 0, 0), (GRID,) * 3, GRID)[None, None]
    with torch.no_grad():
        x = TRANSFORM.forward_input(padded)[None]
        direct = net.infer_draws(x, noise, torch.tensor([[0.35, 0.7]], dtype=torch.float64))
    direct = TRANSFORM.inverse_prediction(direct).clamp(min=0)[0].numpy()
    np.testing.assert_allclose(mean, direct[0], rtol=1e-4)
    np.testing.assert_allclose(draw, direct[1], rtol=1e-4)
    assert (draw > 0).any() and not np.allclose(draw, mean, rtol=0.1)

    other = bind_parameters(net, None, {"Om0": 0.25, "sigma8": 0.9})
    _, other_draw = predict_fields(other, TRANSFORM, inputs, box, options, seeds=[3])
    assert np.abs(np.log1p(other_draw) - np.log1p(draw)).max() > 0.1


@pytest.mark.parametrize(
    "make, side",
    [
        (lambda **kw: TwoPhaseNet(channels=3, levels=1, convs=1, **kw), 2),
        (lambda **kw: PaperNet(channels=2, **kw), 1),
    ],
    ids=["twophase", "paper_cnn"],
)
def test_film_modulates_the_twophase_and_paper_networks(make, side: int) -> None:
    """Once FiLM is not the identity, the two-phase and paper networks' predictions depend on
    the parameters (the identity at start: tests/test_conditioning.py)."""
    torch.manual_seed(0)
    net = make(conditioning="film", parameters=NAMES).eval()
    net.film.set_ranges(RANGES)
    torch.nn.init.normal_(net.film.mlp[-1].weight, std=0.5)
    width = side + 2 * net.context
    x = torch.randn(2, 2, width, width, width, generator=torch.Generator().manual_seed(1))
    low, high = torch.tensor([[0.25, 0.7]] * 2), torch.tensor([[0.35, 0.9]] * 2)
    with torch.no_grad():
        assert not torch.allclose(net(x, low), net(x, high), atol=1e-3)
        assert net.infer(x, low).shape == (2, 1, side, side, side)


@pytest.mark.parametrize("model", ["twophase", "paper_cnn"])
def test_film_composes_for_the_twophase_and_paper_networks(compose, model: str) -> None:
    cfg = compose(["data=mock_lh", f"model={model}", "model.conditioning=film"])
    net = instantiate(cfg.model)
    assert net.parameter_names == tuple(cfg.data.parameter_names)
    assert len(net.parameter_names) >= 2


def test_a_hypercube_universe_store_gives_its_real_recipe(universe, tmp_path) -> None:
    """A mock universe's store (a hypercube universe: it records its parameters) gives the
    mock's recipe with the box, cosmology and particle mass it records, so that the painting
    check against another universe compares real values."""
    mock, store = universe
    assert read_parameters(store) == {"Om0": 0.28, "sigma8": 0.8, "env_dex": 0.2}
    recipe = store_recipe(store, INPUTS)
    sim = SimInfo(32.0, 0.0, 0.28, 0.7, mock.particle_mass, "own_fof")
    assert recipe == Recipe(FieldRecipe(tuple(INPUTS), "CIC", "M200c", 0.0), sim, 2.0)
    assert mock.particle_mass == pytest.approx(mock.cosmo.rho_m * 2.0**3)
    data = SimpleNamespace(source=mock, store=store, inputs=INPUTS)
    assert training_recipe(data) == recipe
    source = MockSource(store.root, tmp_path / "paint", subhalo_mass="M200c", progress=False)
    assert differences(recipe, source.info(), "M200c") == []
    other = SimInfo(32.0, 0.0, 0.3, 0.7, mock.particle_mass * 0.3 / 0.28, "own_fof")
    found = differences(recipe, other, "M200c")
    assert found == [
        "Omega_m: 0.3 here, 0.28 in the training run (ratio 1.071)",
        f"particle mass: {other.particle_mass} here, {mock.particle_mass} in the training run "
        "(ratio 1.071)",
    ]
    # a network bound to Om0 = 0.3 (trained across Omega_m): that run is what it expects
    assert differences(recipe, other, "M200c", {"Om0": 0.3, "sigma8": 0.8}) == []
    bound_elsewhere = differences(recipe, other, "M200c", {"Om0": 0.25})
    assert bound_elsewhere[0] == "Omega_m: 0.3 here, 0.25 the network's bound Om0 (ratio 1.2)"
    assert bound_elsewhere[1].startswith("particle mass: ") and "(ratio 1.2)" in bound_elsewhere[1]


def _film_resnet() -> ResNet3d:
    torch.manual_seed(0)
    net = ResNet3d(channels=3, blocks=1, conditioning="film", parameters=NAMES)
    net.film.set_ranges(RANGES)
    return net.eval()


def test_predictions_record_the_parameters_they_were_bound_to(universe, tmp_path) -> None:
    """The output store records the bound values (``read_parameters`` reads them back); an
    unconditioned network records none; another universe's prediction into that store is
    refused; predicting into the universe's own store keeps its other parameters."""
    _, store = universe
    options = PredictOptions(tile=16, progress=False)
    bound = bind_parameters(_film_resnet(), store, {"Om0": 0.3})
    out = predict_store(bound, TRANSFORM, store, INPUTS, tmp_path / "out", "m", options=options)
    assert read_parameters(out) == {"Om0": 0.3, "sigma8": 0.8}
    plain = ResNet3d(channels=3, blocks=1).eval()
    bare = predict_store(plain, TRANSFORM, store, INPUTS, tmp_path / "bare", "m", options=options)
    assert read_parameters(bare) == {} and "parameters" not in bare.meta()["attrs"]

    other = bind_parameters(_film_resnet(), store, {"Om0": 0.35})
    with pytest.raises(StoreError, match=r"universe with \{'Om0': 0.3\}.*\{'Om0': 0.35\}.*out="):
        predict_store(other, TRANSFORM, store, INPUTS, out.root, "again", options=options)
    assert out.fields() == ["m"] and read_parameters(out)["Om0"] == 0.3

    own = FieldStore(tmp_path / "own")
    shutil.copytree(store.root, own.root)
    at_own = bind_parameters(_film_resnet(), own, None)
    predict_store(at_own, TRANSFORM, own, INPUTS, own.root, "m", options=options)
    assert read_parameters(own) == {"Om0": 0.28, "sigma8": 0.8, "env_dex": 0.2}


def test_paintings_record_the_parameters_they_were_bound_to(universe, tmp_path) -> None:
    """One-process and slab paintings of a conditioned network record its bound values; an
    unconditioned network's painting records none."""
    _, store = universe
    values = {"Om0": 0.3, "sigma8": 0.9}
    model = TrainedModel(
        net=bind_parameters(_film_resnet(), None, values),
        architecture={},
        transform=TRANSFORM,
        recipe=store_recipe(store, INPUTS),
        options=PredictOptions(tile=8, progress=False),
    )
    source = MockSource(store.root, tmp_path / "inputs", subhalo_mass="M200c", progress=False)
    options = PaintOptions(progress=False)
    paint_run(model, source, tmp_path / "whole", options)
    assert read_parameters(FieldStore(tmp_path / "whole")) == values
    for slab in range(2):
        paint_slab(model, source, tmp_path / "slabs", 2, slab, options)
    assert read_parameters(FieldStore(tmp_path / "slabs")) == values
    np.testing.assert_array_equal(
        FieldStore(tmp_path / "slabs").read("stellar"),
        FieldStore(tmp_path / "whole").read("stellar"),
    )
    model.net = ResNet3d(channels=3, blocks=1).eval()
    paint_run(model, source, tmp_path / "plain", options)
    assert read_parameters(FieldStore(tmp_path / "plain")) == {}


def test_paint_binds_a_mock_source_to_the_parameters_its_store_records(universe) -> None:
    """A mock universe's source gives its store's parameters to the binding (the command
    line's win); a source that records none gives nothing to bind."""
    _, store = universe
    source = MockSource(store.root, subhalo_mass="M200c", progress=False)
    bound = bind_parameters(_film_resnet(), source.parameter_store(), None)
    assert bound.values == pytest.approx({"Om0": 0.28, "sigma8": 0.8})
    given = bind_parameters(_film_resnet(), source.parameter_store(), {"sigma8": 0.7})
    assert given.values == pytest.approx({"Om0": 0.28, "sigma8": 0.7})
