"""The Latin hypercube of mock universes (dm2gal.sim.hypercube) and training across its
universes (FieldDataModule with a multi-universe source)."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from dm2gal.data import FieldDataModule
from dm2gal.errors import ConfigError
from dm2gal.io.parameters import parameter_attrs, read_parameters
from dm2gal.io.store import FieldStore, StoreError
from dm2gal.sim.hypercube import Hypercube, latin_hypercube
from dm2gal.sim.mock import MockUniverse
from dm2gal.train.build import compose_train, data_module_config

RANGES = {"Om0": [0.25, 0.35], "sigma8": [0.75, 0.88], "env_dex": [0.0, 0.35]}
SPLITS = {"preset": None, "units": "voxels", "test": [0, 4], "val": [8, 12]}


def tiny_cube(cache, n=3, **kwargs) -> Hypercube:
    """A hypercube of ``n`` 16^3 universes (16^3 particles, 5 PM steps: about a second each)."""
    universe = {"box": 25.0, "particles": 16, "grid": 16, "steps": 5, "cache_dir": str(cache)}
    options = {"test_points": {"shrink": 0.3}, "workers": 1, "progress": False, **kwargs}
    return Hypercube(RANGES, universe, n_universes=n, **options)


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    cube = tiny_cube(tmp_path_factory.mktemp("mock"))
    cube.stores()
    return cube


@pytest.mark.parametrize("n, d, seed", [(16, 6, 0), (5, 3, 1), (2, 1, 7)])
def test_latin_hypercube_has_one_point_per_stratum_per_dimension(n, d, seed):
    unit = latin_hypercube(n, d, seed)
    assert unit.shape == (n, d) and (unit >= 0).all() and (unit < 1).all()
    for column in unit.T:
        assert sorted(np.floor(column * n).astype(int)) == list(range(n))
    np.testing.assert_array_equal(unit, latin_hypercube(n, d, seed))
    assert not np.allclose(unit, latin_hypercube(n, d, seed + 1))


def test_hypercube_points_are_a_latin_hypercube_of_the_ranges(tmp_path):
    cube = tiny_cube(tmp_path, n=8)
    low, high = np.array(list(RANGES.values())).T
    strata = np.floor((cube.points - low) / (high - low) * 8).astype(int)
    for column in strata.T:
        assert sorted(column) == list(range(8))
    universes = cube.training_universes()
    assert [u.seed for u in universes] == list(range(100, 108))
    for u, p in zip(universes, cube.points, strict=True):
        assert u.parameters == pytest.approx(dict(zip(RANGES, p, strict=True)))
        assert (u.cosmo.Om0, u.cosmo.sigma8, u.galaxy_model.env_dex) == pytest.approx(tuple(p))
    assert {u.seed for u in tiny_cube(tmp_path, n=8, same_seed=True).training_universes()} == {100}


def test_test_points_and_response_pairs_stay_inside_the_training_span(tmp_path):
    deltas = {"Om0": 0.01, "env_dex": 0.05}
    cube = tiny_cube(
        tmp_path,
        n=4,
        test_points={"count": 5, "shrink": 0.5},
        response={"deltas": deltas, "seeds": [9]},
    )
    span_low, span_high = cube.points.min(axis=0), cube.points.max(axis=0)
    tests = cube.test_parameter_points
    assert tests.shape == (5, 3) and (tests >= span_low).all() and (tests <= span_high).all()
    assert [u.seed for u in cube.test_universes()] == [5000, 5001, 5002, 5003, 5004]
    centre = {name: sum(bounds) / 2 for name, bounds in RANGES.items()}
    pairs = cube.response_universes(9)
    assert list(pairs) == ["Om0", "env_dex"]
    for name, (low, high) in pairs.items():
        assert low.seed == high.seed == 9
        for side, universe in ((-1, low), (1, high)):
            want = centre | {name: centre[name] + side * deltas[name]}
            assert universe.parameters == pytest.approx(want)
            assert all(
                span_low[i] <= universe.parameters[k] <= span_high[i] for i, k in enumerate(RANGES)
            )


def test_the_centre_baseline_trains_on_the_centre_universe_alone(tmp_path):
    """training=centre: one universe at the middle of every range on IC seed ic_seed, scored
    on the same test universes as the hypercube's."""
    cube = tiny_cube(tmp_path, n=4, training="centre", ic_seed=7)
    (universe,) = cube.training_universes()
    centre = {name: sum(bounds) / 2 for name, bounds in RANGES.items()}
    assert universe.seed == 7 and universe.parameters == pytest.approx(centre)
    full = tiny_cube(tmp_path, n=4, ic_seed=7)
    assert [u.store_dir for u in cube.test_universes()] == [
        u.store_dir for u in full.test_universes()
    ]


def test_more_unseen_universes_for_an_evaluation(tmp_path):
    """with_evaluation: more test points and response seeds, the same training universes; a
    bad count names its key."""
    cube = tiny_cube(tmp_path, n=4, response={"deltas": {"Om0": 0.01}, "seeds": [9]})
    more = cube.with_evaluation(test_count=6, response_seeds=[9, 10])
    assert len(more.test_universes()) == 6 and len(cube.test_universes()) == 4
    assert list(more.response_universes(10)) == ["Om0"] and more.response["seeds"] == [9, 10]
    assert [u.store_dir for u in more.training_universes()] == [
        u.store_dir for u in cube.training_universes()
    ]
    assert cube.with_evaluation().test == cube.test
    with pytest.raises(ConfigError, match="test_points.count"):
        cube.with_evaluation(test_count=0)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"ranges": {"Om0": [0.3, 0.2]}}, "ranges.Om0"),
        ({"ranges": {"omega": [0.2, 0.3]}}, "ranges.omega"),
        ({"test_points": {"shrink": 0.5}}, "test_points.shrink"),
        ({"response": {"deltas": {"sigma8": 0.05}}}, "response.deltas.sigma8"),
        ({"response": {"deltas": {"norm": 0.01}}}, "response.deltas.norm"),
        ({"universe": {"box": 25.0, "seed": 3}}, "universe.seed"),
        ({"ranges": {"Om0": [0.01, 0.04]}, "cosmology": {"Ob0": 0.05}}, "cosmology"),
        ({"training": "middle"}, "training"),
    ],
)
def test_bad_hypercube_options_name_their_key(tmp_path, options, key):
    args = {
        "ranges": RANGES,
        "universe": {"box": 25.0, "cache_dir": str(tmp_path)},
        "n_universes": 3,
        "test_points": {"shrink": 0.3},
        **options,
    }
    with pytest.raises(ConfigError, match=key):
        Hypercube(**args)


def test_stores_record_their_parameters_and_a_second_build_reads_the_cache(cube, monkeypatch):
    stores = cube.stores()
    assert len(stores) == 3 and len({s.root for s in stores}) == 3
    for store, point in zip(stores, cube.points, strict=True):
        assert list(read_parameters(store)) == list(RANGES)
        np.testing.assert_allclose(list(read_parameters(store).values()), point)
    # a cached hypercube regenerates nothing
    monkeypatch.setattr(MockUniverse, "_generate", lambda self, root: pytest.fail("rebuilt"))
    assert [s.root for s in tiny_cube(stores[0].root.parent).stores()] == [s.root for s in stores]
    assert cube.build().root == stores[0].root


def test_parameters_round_trip_and_bad_metadata_names_the_file(tmp_path):
    store = FieldStore(tmp_path / "s")
    store.init(10.0, 4, **parameter_attrs({"sigma8": 0.8, "Om0": 0.3}))
    assert list(read_parameters(store).items()) == [("sigma8", 0.8), ("Om0", 0.3)]
    store.init(10.0, 4, parameters={"Om0": "a"}, parameter_names=["Om0"])
    with pytest.raises(StoreError, match=r"meta.json: attrs.parameters.Om0"):
        read_parameters(store)
    store.init(10.0, 4)
    assert read_parameters(store) == {}


def make_dm(source, **kwargs) -> FieldDataModule:
    args = {"crop": 4, "context": 1, "splits": SPLITS, "stride": 2, "batch_size": 5, **kwargs}
    dm = FieldDataModule(source, **args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_every_crop_carries_its_own_universes_parameters(cube):
    dm = make_dm(cube, augment="none", normalize_on_device=True)
    stores = cube.stores()
    assert [u.root for u in dm.universes] == [s.root for s in stores]
    assert dm.parameter_names == list(RANGES)
    ranges = [dm.parameter_ranges[k] for k in RANGES]
    np.testing.assert_allclose(ranges, np.stack([cube.points.min(0), cube.points.max(0)], 1))
    fields = [s.read("dm") for s in stores]
    train = dm._datasets["train"]
    assert len(train.parts) == 3
    for i in range(0, len(train), 7):
        part = int(np.searchsorted(train.ends, i, side="right"))
        local = i - (int(train.ends[part - 1]) if part else 0)
        item = train[i]
        np.testing.assert_allclose(item["params"].numpy(), cube.points[part], rtol=1e-6)
        # the crop's input is that universe's dm field at its anchor (context 1, periodic)
        start = train.parts[part].start(local) - 1
        idx = np.ix_(*[(start[ax] + np.arange(6)) % 16 for ax in range(3)])
        np.testing.assert_array_equal(item["input"][0].numpy(), fields[part][idx])
    batch = next(iter(dm.train_dataloader()))
    assert batch["params"].shape == (5, 3) and batch["params"].dtype == torch.float32
    for split in ("val", "test"):
        tiles = dm._datasets[split]
        assert len(tiles) == 3 * len(tiles.parts[0])
        params = torch.stack([tiles[i]["params"] for i in range(len(tiles))])
        want = np.repeat(cube.points, len(tiles.parts[0]), axis=0)
        np.testing.assert_allclose(params.numpy(), want, rtol=1e-6)


def test_normalisation_pools_every_universes_training_region(cube):
    dm = make_dm(cube)
    train = dm.splits.train_mask
    for channel, name in enumerate(["dm", "subhalo"]):
        boxes = [np.log10(1 + s.read(name)[train].astype(np.float64)) for s in cube.stores()]
        values = np.concatenate(boxes)
        assert dm.transform.input_mean[channel] == pytest.approx(values.mean(), rel=1e-9)
        assert dm.transform.input_std[channel] == pytest.approx(values.std(), rel=1e-6)
        # not the first universe's alone (its dm mass per voxel scales with its Om0)
        assert dm.transform.input_mean[channel] != pytest.approx(boxes[0].mean(), rel=1e-4)
    stellar = [s.read("stellar")[train] for s in cube.stores()]
    assert dm.transform.target_max == pytest.approx(max(float(s.max()) for s in stellar))


def test_the_mass_bin_sampler_bins_crops_of_every_universe_together(cube):
    from functools import partial

    from dm2gal.data.sampler import MassBinSampler

    dm = make_dm(cube, sampler=partial(MassBinSampler, bins=4, importance=True))
    single = make_dm(cube.stores()[1], sampler=partial(MassBinSampler, bins=4))
    lengths = [len(p) for p in dm._datasets["train"].parts]
    assert len(dm.stat) == sum(lengths) and lengths[1] == len(single.stat)
    np.testing.assert_array_equal(dm.stat[lengths[0] : lengths[0] + lengths[1]], single.stat)
    sampler = dm.make_sampler()
    # weights P_uniform / P_drawn from bins over all universes: they average to 1 over draws
    drawn = np.concatenate([sampler.draw() for _ in range(20)])
    assert sampler.weights(drawn).mean() == pytest.approx(1.0, rel=0.1)
    assert len(set(np.searchsorted(dm._datasets["train"].ends, drawn, side="right"))) == 3


def test_a_single_universe_source_has_no_parameters(cube, tmp_path):
    plain = FieldStore(tmp_path / "plain")
    first = cube.stores()[0]
    plain.init(first.box, first.grid)
    for name in ("dm", "subhalo", "stellar"):
        plain.write(name, np.asarray(first.read(name)))
    dm = make_dm(plain)
    assert dm.parameter_names == [] and dm.parameter_ranges == {}
    assert "params" not in next(iter(dm.train_dataloader()))
    with pytest.raises(ConfigError, match="records the parameters"):
        make_dm(cube, training_stores=[str(plain.root)])


def test_mock_lh_composes_and_smoke_shrinks_it(tmp_path):
    full = data_module_config(compose_train(["data=mock_lh"]).data)
    assert full.source.n_universes == 16 and full.source.universe.particles == 64
    assert full.source.universe.box / full.source.universe.grid == pytest.approx(75 / 128)
    # the default held-out cubes leave 32^3 training inputs room (crop 16, context 8)
    instantiate(full, context=8).check_room(full.source.universe.grid, "mock_lh's grid")
    smoke = data_module_config(compose_train(["experiment=smoke", "data=mock_lh"]).data)
    assert (smoke.source.n_universes, smoke.source.universe.particles) == (4, 32)
    assert list(smoke.splits.val) == [0.6875, 0.875]  # smoke's own held-out cubes
    cube = instantiate(smoke.source, universe={"cache_dir": str(tmp_path)})
    assert cube.names == ["Om0", "sigma8", "norm", "log_m1", "scatter_dex", "env_dex"]
    assert len(cube.test_universes()) == 4 and len(cube.response_universes(6000)) == 3


@pytest.mark.slow
def test_parallel_builds_equal_serial_ones(tmp_path):
    serial = tiny_cube(tmp_path / "serial").stores()
    parallel = tiny_cube(tmp_path / "parallel", workers=2).stores()
    for a, b in zip(serial, parallel, strict=True):
        assert a.root.name == b.root.name
        for name in ("dm", "stellar"):
            assert a.field_meta(name)["hash"] == b.field_meta(name)["hash"]


@pytest.mark.slow
def test_a_conditioned_network_trains_on_the_smoke_hypercube(compose):
    """experiment=smoke data=mock_lh model.conditioning=film: one training and one validation
    batch from the 4 smoke universes; the network keeps the data's parameter names and ranges."""
    from dm2gal.train.build import build

    cfg = compose(["data=mock_lh", "model.conditioning=film", "trainer.fast_dev_run=true"])
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert len(datamodule.universes) == 4
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert list(module.net.parameter_names) == datamodule.parameter_names
    ranges = module.net.film.ranges
    for name, (low, high) in datamodule.parameter_ranges.items():
        assert ranges[name] == pytest.approx((low, high))
