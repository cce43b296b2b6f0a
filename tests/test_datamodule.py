import functools
import itertools

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dm2gal.data import FieldDataModule
from dm2gal.data.sampler import MassBinSampler
from dm2gal.errors import ConfigError
from dm2gal.io.store import FieldStore

GRID = 16
SPLITS = {"preset": None, "test": [0, 5], "val": {"start": [8, 8, 0], "stop": [13, 13, 6]}}


class FakeSource:
    """Writes random dm / subhalo fields and a sparse stellar field into a store once."""

    def __init__(self, root, grid=GRID, box=20.0, seed=0):
        self.root, self.grid, self.box, self.seed, self.builds = root, grid, box, seed, 0

    def realisation(self, seed: int) -> "FakeSource":
        """Another universe: its own store next to this one, other random fields."""
        return FakeSource(self.root.parent / f"universe{seed}", self.grid, self.box, seed)

    def build(self) -> FieldStore:
        store = FieldStore(self.root)
        if not store.exists():
            self.builds += 1
            rng = np.random.default_rng(self.seed)
            shape = (self.grid,) * 3
            store.init(self.box, self.grid)
            store.write("dm", rng.lognormal(22, 1, shape))
            store.write(
                "subhalo", np.where(rng.random(shape) < 0.3, rng.lognormal(20, 2, shape), 0)
            )
            store.write(
                "stellar", np.where(rng.random(shape) < 0.2, 10 ** rng.normal(8, 1, shape), 0)
            )
        return store


def make_dm(tmp_path, **kwargs):
    args = {"crop": 2, "context": 1, "splits": SPLITS, "batch_size": 4, "seed": 7, **kwargs}
    dm = FieldDataModule(FakeSource(tmp_path / "store"), **args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_have_the_contracted_shapes_and_meaning(tmp_path):
    dm = make_dm(tmp_path)
    assert (dm.grid, dm.box, dm.splits.guard) == (GRID, 20.0, 1)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input", "target", "occupied", "valid"}
    assert batch["input"].shape == (4, 2, 4, 4, 4) and batch["input"].dtype == torch.float32
    assert batch["target"].shape == (4, 1, 2, 2, 2) and batch["target"].dtype == torch.float32
    assert batch["occupied"].dtype == torch.bool
    raw = dm.transform.inverse_target(batch["target"])
    np.testing.assert_array_equal(batch["occupied"].numpy(), raw.numpy() > 1e-3)
    empty = batch["target"][~batch["occupied"]]
    np.testing.assert_allclose(empty.numpy(), dm.transform.empty_value, atol=1e-6)
    # normalised inputs have roughly zero mean and unit spread over the training region
    x = torch.cat([b["input"] for b in dm.train_dataloader()])
    assert abs(float(x[:, 0].mean())) < 0.3 and 0.6 < float(x[:, 0].std()) < 1.4


def test_no_heldout_voxel_reaches_any_training_input(tmp_path):
    """Exhaustive over every training anchor on a 16^3 grid, stride 1, with a random shift."""
    dm = make_dm(
        tmp_path, crop=2, context=2, stride=1, splits={**SPLITS, "guard": 1}, random_shift=True
    )
    assert dm.splits.guard == 2  # max(guard, context)
    heldout = ~dm.splits.train_mask
    assert (dm.splits.test.voxel_mask() | dm.splits.val.voxel_mask() <= heldout).all()
    ds = dm._datasets["train"]
    seen = np.zeros((GRID,) * 3, dtype=bool)
    for i in range(len(ds)):
        idx = [(ds.start(i)[a] - 2 + np.arange(6)) % GRID for a in range(3)]
        assert not heldout[np.ix_(*idx)].any()
        seen[np.ix_(*idx)] = True
    # and every allowed input position is an anchor (complete, not just safe)
    count = sum(
        not heldout[np.ix_(*[(s[a] - 2 + np.arange(6)) % GRID for a in range(3)])].any()
        for s in itertools.product(range(GRID), repeat=3)
    )
    assert len(ds) == count > 0
    for _ in range(300):  # random shifts fall back to allowed anchors
        start = ds._shifted(ds.start(np.random.randint(len(ds))), ds.gen)
        idx = [(start[a] - 2 + np.arange(6)) % GRID for a in range(3)]
        assert not heldout[np.ix_(*idx)].any()


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_crops_tile_the_region_exactly_once(tmp_path, split):
    dm = make_dm(tmp_path, crop=2, context=1)
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    ds = loader.dataset
    region = getattr(dm.splits, split)
    covered = np.zeros((GRID,) * 3, dtype=int)
    stellar = dm.store.read("stellar")
    targets = []
    for i in range(len(ds)):
        item = ds[i]
        idx = np.ix_(*[(ds.start(i)[a] + np.arange(2)) % GRID for a in range(3)])
        np.add.at(covered, idx, item["valid"].numpy()[0])
        np.testing.assert_allclose(
            dm.transform.inverse_target(item["target"])[0], stellar[idx], rtol=1e-4, atol=1e-3
        )
        targets.append(item["target"])
    np.testing.assert_array_equal(covered, region.voxel_mask().astype(int))
    batched = torch.cat([b["target"] for b in loader])  # deterministic order, no augmentation
    np.testing.assert_array_equal(batched.numpy(), torch.stack(targets).numpy())


def test_state_dict_restores_the_normalisation(tmp_path):
    dm = make_dm(tmp_path)
    state = dm.state_dict()
    state["transform"]["target_mean"] += 1.0
    other = FieldDataModule(FakeSource(tmp_path / "store"), crop=2, context=1, splits=SPLITS)
    other.load_state_dict(state)
    other.setup("fit")
    assert other.transform.state_dict() == state["transform"]
    assert other.trained_voxel_size == pytest.approx(dm.box / dm.grid)
    dm.load_state_dict(state)  # after setup: the datasets see it too
    assert dm._datasets["train"].transform.target_mean == state["transform"]["target_mean"]


def test_same_seed_same_batches_and_mass_bin_sampler(tmp_path):
    sampler = functools.partial(MassBinSampler, bins=5, samples_per_epoch=12)
    first = [make_dm(tmp_path, sampler=sampler, crop=1, context=2, stride=1) for _ in range(2)]
    a, b = (next(iter(dm.train_dataloader())) for dm in first)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert len(first[0].train_dataloader().sampler) == 12
    assert len(first[0].stat) == len(first[0]._datasets["train"])


def test_mass_bin_sampler_bins_an_input_field_with_sample_on(tmp_path):
    """With crop 1 a training anchor's statistic is log10(1 + M) of its voxel: the target's by
    default, the subhalo field's with ``sample_on=subhalo``; an unknown field is refused."""
    sampler = functools.partial(MassBinSampler, bins=5, samples_per_epoch=12)
    for name in (None, "subhalo"):
        dm = make_dm(tmp_path, sampler=sampler, crop=1, context=1, stride=1, sample_on=name)
        field = np.asarray(dm.store.read(name or "stellar"))
        anchors = dm._datasets["train"].anchors
        i, j, k = np.unravel_index(anchors, (GRID,) * 3)
        np.testing.assert_allclose(dm.stat, np.log10(1 + field[i, j, k]), rtol=1e-6)
    with pytest.raises(ConfigError, match="data.sample_on"):
        make_dm(tmp_path, sample_on="stellar")


def test_min_target_mass_keeps_only_massive_training_targets(tmp_path):
    dm = make_dm(tmp_path, crop=1, context=1, stride=1, min_target_mass=1e8)
    ds = dm._datasets["train"]
    stellar = dm.store.read("stellar")
    starts = np.array([ds.start(i) for i in range(len(ds))])
    assert (stellar[tuple(starts.T)] > 1e8).all()
    assert len(ds) > 0
    item = dm._datasets["val"][0]
    raw = dm.transform.inverse_target(item["target"])
    np.testing.assert_array_equal(item["valid"].numpy(), raw.numpy() > 1e8 * (1 - 1e-5))


def test_worker_processes_load_the_same_crops(tmp_path):
    dm = make_dm(tmp_path, augment="none", num_workers=2, batch_size=8)
    with_workers = torch.cat([b["target"] for b in dm.val_dataloader()])
    dm.num_workers = 0
    np.testing.assert_array_equal(
        with_workers, torch.cat([b["target"] for b in dm.val_dataloader()])
    )


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"crop": -2}, "data.crop"),
        ({"crop": 17}, r"'data.crop' = 17 plus twice the network's context \(1 voxels"),
        ({"crop": 8, "context": 5}, r"'data.crop' = 8 plus twice the network's context \(5 voxels"),
        ({"splits": {"preset": None, "test": [0, 6], "val": [5, 9]}}, "overlap"),
        ({"crop": 4, "context": 2}, "no 8\\^3 training input on a 16\\^3 grid stays clear"),
        ({"augment": "flips"}, "data.augment"),
        ({"transform": {"log": True, "scale": 2}}, "data.transform"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"inputs": ["dm", "gas"]}, "no field 'gas'"),
    ],
)
def test_bad_config_raises_naming_the_key(tmp_path, kwargs, key):
    with pytest.raises(Exception, match=key):
        make_dm(tmp_path, **kwargs)


def test_configs_instantiate(tmp_path):
    for name, cls in (("mass_bins", "MassBinSampler"), ("uniform", "UniformSampler")):
        partial = instantiate(OmegaConf.load(f"conf/sampler/{name}.yaml"))
        assert partial.func.__name__ == cls
    cfg = OmegaConf.load("conf/data/datamodule/default.yaml")
    cfg.source = {"_target_": f"{FakeSource.__module__}.FakeSource", "root": str(tmp_path / "s")}
    cfg.seed = 3
    cfg.splits = {"preset": None, "test": [0, 4], "val": [8, 12]}
    dm = instantiate(
        cfg, context=1, crop=2, sampler=instantiate(OmegaConf.load("conf/sampler/mass_bins.yaml"))
    )
    dm.setup("fit")
    sampler_cfg = OmegaConf.load("conf/sampler/mass_bins.yaml")
    assert len(dm.train_dataloader().sampler) == sampler_cfg.samples_per_epoch
    assert isinstance(dm.source, FakeSource) and dm.inputs == ["dm", "subhalo"]


def test_normalize_on_device_gives_the_same_batches_after_transfer(tmp_path):
    on_cpu = make_dm(tmp_path, augment="none")
    on_device = make_dm(tmp_path, augment="none", normalize_on_device=True)
    raw = next(iter(on_device.val_dataloader()))
    assert raw["target"].max() > 1e6  # Msun/h, not normalised
    moved = on_device.on_after_batch_transfer(raw, 0)
    expected = next(iter(on_cpu.val_dataloader()))
    for key in expected:
        torch.testing.assert_close(moved[key], expected[key], rtol=1e-5, atol=1e-5)
    assert on_cpu.on_after_batch_transfer(expected, 0) is expected


def test_training_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    """Each draw carries its own augmentation seed (AugmentationSeeds), so epochs repeat
    exactly with any worker count and after a resume."""
    batches = []
    for workers in (0, 2):
        dm = make_dm(tmp_path / f"w{workers}", num_workers=workers, random_shift=True)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(3)
        batches.append(next(iter(loader)))
    for key in ("input", "target"):
        torch.testing.assert_close(batches[0][key], batches[1][key], rtol=0, atol=0)


def test_importance_sampler_puts_each_crops_weight_in_the_batch(tmp_path):
    """With ``importance=True`` every training item carries its draw's P_uniform / P_drawn; the
    weights of the loader's first batch are those the sampler gives for its first draws."""
    sampler = functools.partial(MassBinSampler, bins=5, samples_per_epoch=12, importance=True)
    dm = make_dm(tmp_path, sampler=sampler, crop=1, context=1, stride=1)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    drawn = loader.sampler.sampler.draw()[: len(batch["weight"])]
    expected = loader.sampler.sampler.weights(drawn)
    np.testing.assert_allclose(batch["weight"].numpy(), expected, rtol=1e-6)
    assert "weight" not in next(iter(make_dm(tmp_path / "plain").train_dataloader()))


def test_training_universes_add_whole_boxes_to_the_training_crops(tmp_path):
    """Each further universe adds its whole stride lattice, read from its own store and
    normalised like the source's crops; the held-out regions, the normalisation and the
    validation tiles stay the source's, and the sampler's statistic covers every crop."""
    sampler = functools.partial(MassBinSampler, bins=5, samples_per_epoch=12, importance=True)
    kwargs = {"sampler": sampler, "crop": 2, "context": 1, "augment": "none"}
    alone = make_dm(tmp_path / "alone", **kwargs)
    dm = make_dm(tmp_path / "more", training_universes=2, training_seed=5, **kwargs)
    train, main = dm._datasets["train"], alone._datasets["train"]
    assert [len(p) for p in train.parts] == [len(main), GRID**3, GRID**3]  # stride 1
    assert len(dm.stat) == len(train)
    np.testing.assert_allclose(dm.stat[: len(main)], alone.stat)
    assert [b.root.name for b in dm.training_boxes] == ["universe5", "universe6"]
    assert dm.transform.state_dict() == alone.transform.state_dict()
    assert len(dm._datasets["val"]) == len(alone._datasets["val"])
    other = dm.training_boxes[1]
    i = len(main) + GRID**3 + 37  # anchor 37 of the second universe
    start = np.unravel_index(37, (GRID,) * 3)
    item = train[(i, 0, 1.0)]
    raw = dm.transform.inverse_target(item["target"])[0].numpy()
    expected = np.asarray(other.read("stellar"))[tuple(slice(s, s + 2) for s in start)]
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-3)
    sample = next(iter(dm.train_dataloader()))
    assert sample["input"].shape == (4, 2, 4, 4, 4) and "weight" in sample


def test_training_stores_join_and_mismatched_ones_are_refused(tmp_path):
    extra = FakeSource(tmp_path / "extra", seed=9).build()
    dm = make_dm(tmp_path / "a", training_stores=[str(extra.root)], crop=2, context=1)
    assert len(dm._datasets["train"].parts) == 2
    coarse = FakeSource(tmp_path / "coarse", box=40.0, seed=9).build()
    wrong = rf"{coarse.root}: voxels of 2.5 Mpc/h .*the source's voxels of 1.25 Mpc/h"
    with pytest.raises(ConfigError, match=wrong):
        make_dm(tmp_path / "b", training_stores=[str(coarse.root)])
    with pytest.raises(ConfigError, match="data.training_universes: the data source"):
        FieldDataModule(extra, training_universes=1)
