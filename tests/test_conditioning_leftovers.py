"""What a conditioned network bound to one universe gives beyond its mean field: coherent
(copula) draws, the parameters its predictions record, the recipe of a mock universe's store,
and FiLM on the two-phase and paper networks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.infer.copula_fit import fit_copula, fit_region_copula
from dm2gal.infer.parameters import bind_parameters
from dm2gal.infer.predict import PredictOptions, predict_fields
from dm2gal.infer.recipe import store_recipe, training_recipe
from dm2gal.io.parameters import read_parameters
from dm2gal.io.recipe import FieldRecipe, Recipe, SimInfo
from dm2gal.models import PaperNet, ProbabilisticNet, TwoPhaseNet
from dm2gal.paint.sources import MockSource
from dm2gal.paint.trust import differences
from dm2gal.sim.mock import MockUniverse

NAMES = ("Om0", "sigma8")
RANGES = {"Om0": (0.2, 0.4), "sigma8": (0.6, 1.0)}
GRID = 12
TRANSFORM = FieldTransform([2.0, 2.0], [1.0, 1.0], 1.5, 1.0, target_max=1e11)


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


def test_a_hypercube_universe_store_gives_its_real_recipe(tmp_path) -> None:
    """A mock universe's store (a hypercube universe: it records its parameters) gives the
    mock's recipe with the box, cosmology and particle mass it records, so that the painting
    check against another universe compares real values."""
    cosmology = {"Om0": 0.28, "H0": 70.0}
    mock = MockUniverse(box=32.0, particles=16, grid=16, seed=3, steps=5, cache_dir=tmp_path,
                        cosmology=cosmology, parameter_names=("Om0", "sigma8"))  # fmt: skip
    store = mock.build()
    assert read_parameters(store) == {"Om0": 0.28, "sigma8": mock.cosmo.sigma8}
    recipe = store_recipe(store, ["dm", "subhalo"])
    sim = SimInfo(32.0, 0.0, 0.28, 0.7, mock.particle_mass, "own_fof")
    assert recipe == Recipe(FieldRecipe(("dm", "subhalo"), "CIC", "M200c", 0.0), sim, 2.0)
    assert mock.particle_mass == pytest.approx(mock.cosmo.rho_m * 2.0**3)
    data = SimpleNamespace(source=mock, store=store, inputs=["dm", "subhalo"])
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
