import itertools

import numpy as np
import pytest

from dm2gal.data.symmetry import SYMMETRIES, symmetry_group


def _matrix(sym):
    """The signed permutation matrix acting on coordinates."""
    flips = np.diag([-1 if f else 1 for f in sym.flips])
    return np.eye(3)[list(sym.perm)] @ flips


def test_48_distinct_maps_preserving_each_channel_sum():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1000, size=(3, 5, 5, 5))  # integers: sums are exact
    images = {sym(x).tobytes() for sym in SYMMETRIES}
    assert len(SYMMETRIES) == 48 and len(images) == 48
    for sym in SYMMETRIES:
        y = sym(x)
        assert y.shape == x.shape
        np.testing.assert_array_equal(y.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)))
        # channels are never mixed: each channel maps like channel 0 does
        np.testing.assert_array_equal(sym(x[1:2])[0], y[1])


def test_rotations24_are_the_proper_rotations():
    rotations = symmetry_group("rotations24")
    assert len(rotations) == 24
    for sym in SYMMETRIES:
        assert sym.det == round(np.linalg.det(_matrix(sym)))
    assert all(round(np.linalg.det(_matrix(s))) == 1 for s in rotations)
    assert len(symmetry_group("none")) == 1
    x = np.arange(27).reshape(3, 3, 3)
    np.testing.assert_array_equal(symmetry_group("none")[0](x), x)


def test_symmetry_moves_voxels_like_its_matrix():
    x = np.zeros((5, 5, 5))
    x[4, 1, 0] = 1.0  # offset (2, -1, -2) from the centre
    for sym in SYMMETRIES:
        y = sym(x)
        where = np.argwhere(y == 1)[0] - 2
        # perm reorders output axes from input axes after flips
        flipped = np.array([-o if f else o for o, f in zip((2, -1, -2), sym.flips, strict=True)])
        np.testing.assert_array_equal(where, flipped[list(sym.perm)])


def test_same_map_keeps_concentric_input_and_target_aligned():
    x = np.random.default_rng(1).random((2, 9, 9, 9))
    c = 3
    for sym, ch in itertools.product(SYMMETRIES, range(2)):
        np.testing.assert_array_equal(sym(x)[ch, c:-c, c:-c, c:-c], sym(x[ch, c:-c, c:-c, c:-c]))


def test_unknown_augment_names_the_key():
    with pytest.raises(ValueError, match="data.augment"):
        symmetry_group("all24")
