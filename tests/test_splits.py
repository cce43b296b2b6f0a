import itertools

import numpy as np
import pytest

from dm2gal.data.crops import lattice
from dm2gal.data.splits import make_splits


def test_paper_preset_gives_paper_voxel_ranges_at_2048():
    s = make_splits(2048, preset="paper")
    assert s.test.start == (64, 64, 64) and s.test.size == (868, 868, 868)
    assert s.val.start == (1000, 1000, 1000) and s.val.size == (800, 800, 800)
    assert pytest.approx(31.79, abs=0.01) == 868 * 75.0 / 2048  # the paper's 31.8 Mpc/h cube
    assert s.guard == 0


def test_paper_preset_scales_and_leaves_training_data_at_128():
    s = make_splits(128, preset="paper", guard=4)
    assert s.test.start == (4,) * 3 and s.test.size == (54,) * 3  # 64/16 .. 932/16
    assert s.val.start == (63,) * 3 and s.val.size == (50,) * 3  # 1000/16 .. 1800/16, rounded
    # box minus two cubes widened by the guard, (54 + 8)^3 and (50 + 8)^3, sharing 3^3 voxels
    assert s.train_mask.mean() == pytest.approx(1 - (62**3 + 58**3 - 3**3) / 128**3)


def test_fraction_units_and_guard_is_at_least_the_context():
    s = make_splits(
        32,
        preset=None,
        test=[0.0, 0.25],
        val={"start": [0.5, 0, 0], "stop": [1, 0.5, 1]},
        units="fraction",
        guard=1,
        context=3,
    )
    assert s.test.start == (0, 0, 0) and s.test.size == (8, 8, 8)
    assert s.val.start == (16, 0, 0) and s.val.size == (16, 16, 32)
    assert s.guard == 3
    assert make_splits(32, guard=5, context=3).guard == 5


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"preset": None, "test": [0, 10], "val": [5, 20]}, "overlap"),
        ({"preset": None, "test": [0, 10], "val": [8, 41]}, "data.splits.val"),
        ({"preset": None, "test": [4, 4], "val": [8, 12]}, "data.splits.test"),
        ({"preset": None, "test": [0, 4]}, "both 'test' and 'val'"),
        ({"preset": "tng"}, "data.splits.preset"),
        ({"preset": None, "test": [0, 4], "val": [8, 12], "units": "mpc"}, "data.splits.units"),
        ({"guard": -1}, "data.splits.guard"),
        ({"preset": None, "test": {"start": 0}, "val": [8, 12]}, "data.splits.test"),
    ],
)
def test_bad_split_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        make_splits(32, **kwargs)


def test_regions_overlap_only_when_they_share_a_voxel():
    with pytest.raises(ValueError, match="overlap"):
        make_splits(16, preset=None, test=[0, 4], val={"start": [3, 3, 3], "stop": [8, 8, 8]})
    s = make_splits(16, preset=None, test=[0, 4], val={"start": [0, 0, 4], "stop": [4, 4, 8]})
    assert not (s.test.voxel_mask() & s.val.voxel_mask()).any()


def test_allowed_cubes_are_exactly_those_inside_the_training_mask():
    grid, size = 16, 5
    s = make_splits(
        grid, preset=None, test={"start": [1, 2, 3], "stop": [5, 7, 6]}, val=[9, 13], guard=2
    )
    mask = s.train_mask
    axes = [lattice(grid, 1)] * 3
    allowed = s.lattice_allowed(axes, size)
    for start in itertools.product(range(grid), repeat=3):
        idx = [(start[a] + np.arange(size)) % grid for a in range(3)]
        assert allowed[start] == mask[np.ix_(*idx)].all(), start
    assert allowed.any() and not allowed.all()
    starts = np.argwhere(np.ones((grid,) * 3))
    np.testing.assert_array_equal(s.cube_allowed(starts, size), allowed.reshape(-1))


def test_train_mask_planes_and_is_heldout_match_the_mask():
    box, grid = 50.0, 16
    s = make_splits(grid, preset=None, test=[14, 19], val=[4, 9], guard=1)
    np.testing.assert_array_equal(s.train_mask_planes(3, 11), s.train_mask[3:11])
    pos = np.random.default_rng(0).uniform(-box, 2 * box, size=(2000, 3))
    voxel = np.floor(np.mod(pos, box) / box * grid).astype(int)
    expected = ~s.train_mask[voxel[:, 0], voxel[:, 1], voxel[:, 2]]
    np.testing.assert_array_equal(s.is_heldout(pos, box), expected)


@pytest.mark.parametrize(
    ("grid", "context", "crop", "stride"),
    [
        (128, 32, 1, 1),
        (128, 8, 16, 8),
        (128, 20, 16, 8),
        (256, 32, 1, 2),
        (64, 8, 8, 4),
        (48, 4, 4, 3),
    ],
)
def test_lattice_has_room_is_lattice_allowed_anywhere(grid, context, crop, stride):
    """The pattern shortcut agrees with the full lattice, rooms and no-rooms alike."""
    splits = make_splits(grid, context=context)
    starts = [lattice(grid, stride) - context] * 3
    size = crop + 2 * context
    assert splits.lattice_has_room(starts, size) == splits.lattice_allowed(starts, size).any()


def test_lattice_has_room_on_random_splits():
    """Random boxes, regions, guards, lattices and input sides: about half have room."""
    rng = np.random.default_rng(3)
    found = []
    for _ in range(60):
        grid = int(rng.integers(24, 48))
        a = int(rng.integers(grid))
        b = (a + grid // 2) % grid
        test = [a, a + int(rng.integers(grid // 4, grid // 2))]
        val = [b, b + int(rng.integers(grid // 8, grid // 3))]
        splits = make_splits(grid, preset=None, test=test, val=val, guard=int(rng.integers(6)))
        starts = [lattice(grid, int(rng.integers(1, 5)), int(rng.integers(grid)))] * 3
        size = int(rng.integers(grid // 4, grid - 2))
        room = splits.lattice_allowed(starts, size).any()
        assert splits.lattice_has_room(starts, size) == room
        found.append(room)
    assert 10 < sum(found) < 50
