import numpy as np
import pytest
import torch

from dm2gal.data.crops import ConcatCrops, FieldCrops, crop_stat, lattice, read_crop
from dm2gal.data.regions import Region
from dm2gal.data.symmetry import symmetry_group
from dm2gal.data.transforms import FieldTransform

GRID = 16


@pytest.fixture
def field(tmp_path):
    array = np.random.default_rng(0).random((GRID,) * 3).astype(np.float32)
    np.save(tmp_path / "f.npy", array)
    return array, np.load(tmp_path / "f.npy", mmap_mode="r")


@pytest.mark.parametrize("start", [(-3, 14, 5), (0, 0, 0), (13, -1, 15), (7, 7, 7)])
def test_crop_at_box_corner_equals_crop_of_rolled_field(field, start):
    array, mapped = field
    rolled = np.roll(array, shift=[-s for s in start], axis=(0, 1, 2))
    np.testing.assert_array_equal(read_crop(mapped, start, 7), rolled[:7, :7, :7])


def test_crop_wider_than_box_wraps_several_times(field):
    array, mapped = field
    idx = np.arange(-5, 35) % GRID
    np.testing.assert_array_equal(read_crop(mapped, (-5, -5, -5), 40), array[np.ix_(idx, idx, idx)])


def test_box_with_three_sides_wraps_per_axis(field):
    array, mapped = field
    start, size = (14, -2, 3), (5, 20, 1)
    idx = [np.arange(s, s + n) % GRID for s, n in zip(start, size, strict=True)]
    np.testing.assert_array_equal(read_crop(mapped, start, size), array[np.ix_(*idx)])


def test_crop_stat_is_log_of_crop_total(field):
    array, _ = field
    axes = [lattice(GRID, 3), lattice(GRID, 5, 2), np.array([15, 0])]
    stat = crop_stat(array, axes, 4)
    for i, j, k in [(0, 0, 0), (5, 3, 1), (2, 1, 0)]:
        start = (axes[0][i], axes[1][j], axes[2][k])
        total = read_crop(array, start, 4).astype(np.float64).sum()
        assert stat[i, j, k] == pytest.approx(np.log10(1 + total), rel=1e-6)
    one = crop_stat(array, [lattice(GRID, 1)] * 3, 1)
    np.testing.assert_allclose(one, np.log10(1 + array.astype(np.float64)), rtol=1e-6)


def _identity(channels):
    return FieldTransform([0.0] * channels, [1.0] * channels, log=False)


def test_items_align_input_and_target_under_every_symmetry(tmp_path, field):
    array, _ = field
    np.save(tmp_path / "g.npy", 2 * array)
    paths = [tmp_path / "f.npy", tmp_path / "g.npy", tmp_path / "f.npy"]
    axes = [lattice(GRID, 4, 1)] * 3
    ds = FieldCrops(paths, 2, 3, axes, None, _identity(2), symmetry_group("all48"))
    assert len(ds) == 64
    for i in range(0, 64, 7):
        item = ds[i]
        x, y = item["input"].numpy(), item["target"].numpy()
        assert x.shape == (2, 8, 8, 8) and y.shape == (1, 2, 2, 2)
        np.testing.assert_array_equal(x[0, 3:5, 3:5, 3:5], y[0])
        np.testing.assert_array_equal(x[1], 2 * x[0])
        assert item["occupied"].all() and item["valid"].all()
        # values are the field's own, only reordered
        start = ds.start(i)
        assert np.isclose(y.sum(), read_crop(array, start, 2).sum(), rtol=1e-6)


def test_region_tiles_mark_valid_voxels(tmp_path, field):
    region = Region((14, 0, 3), (5, 4, 3), GRID)
    axes = [(region.start[a] + np.arange(0, region.size[a], 4)) % GRID for a in range(3)]
    ds = FieldCrops([tmp_path / "f.npy"] * 2, 4, 1, axes, None, _identity(1), region=region)
    covered = np.zeros((GRID,) * 3, dtype=int)
    for i in range(len(ds)):
        valid = ds[i]["valid"].numpy()[0]
        idx = [(ds.start(i)[a] + np.arange(4)) % GRID for a in range(3)]
        np.add.at(covered, np.ix_(*idx), valid)
    np.testing.assert_array_equal(covered, region.voxel_mask().astype(int))


def test_concatenation_passes_keys_to_the_part_that_holds_the_index(tmp_path, field):
    """Index i of the concatenation is the right part's local item; seeds and importance
    weights travel with it."""
    array, _ = field
    paths = []
    for name, values in (("x", array), ("y", 2.0 * array)):
        np.save(tmp_path / f"{name}.npy", values)
        paths.append(tmp_path / f"{name}.npy")
    axes = [lattice(GRID, 4)] * 3
    first = FieldCrops(paths, 4, 1, axes, np.array([0, 5]), None)
    second = FieldCrops(paths[::-1], 4, 1, axes, np.array([3, 7, 9]), None)
    both = ConcatCrops([first, second])
    assert len(both) == 5
    for i, (part, local) in enumerate(
        [(first, 0), (first, 1), (second, 0), (second, 1), (second, 2)]
    ):
        expected = part[local]
        got = both[(i, 11, 0.25)]
        np.testing.assert_array_equal(got["input"], expected["input"])
        np.testing.assert_array_equal(got["target"], expected["target"])
        assert float(got["weight"]) == 0.25
    with pytest.raises(IndexError, match="out of range for 5"):
        both[5]


def test_random_shift_without_splits_moves_every_anchor(tmp_path, field):
    """A whole training box (no held-out regions): each item moves by its own seeded offset."""
    array, _ = field
    axes = [lattice(GRID, 4)] * 3
    ds = FieldCrops([tmp_path / "f.npy"] * 2, 2, 1, axes, None, None, shift=4)
    for i, seed in [(0, 3), (21, 8), (63, 5)]:
        offset = torch.randint(0, 4, (3,), generator=torch.Generator().manual_seed(seed)).numpy()
        expected = read_crop(array, ds.start(i) + offset, 2)
        np.testing.assert_array_equal(ds[(i, seed)]["target"][0].numpy(), expected)
