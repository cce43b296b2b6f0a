import numpy as np
import pytest
import torch

from dm2gal.data.splits import make_splits
from dm2gal.data.transforms import FieldTransform, fit_transform, region_moments

MASSES = np.array([0.0, 1e-3, 1.0, 1e6, 1e8, 3.7e10, 1e12])


def test_target_round_trips_in_numpy_and_torch():
    """Exact up to the float precision of the normalised value: |error| <= tol * (1 + M)."""
    t = FieldTransform([1.0, 2.0], [0.5, 3.0], target_mean=2.5, target_std=3.0)
    for dtype, tol in ((np.float64, 1e-13), (np.float32, 2e-6)):
        y = MASSES.astype(dtype)
        z = t.forward_target(y)
        assert z.dtype == dtype
        assert (np.abs(t.inverse_target(z) - y) <= tol * (1 + y)).all()
        zt = t.forward_target(torch.from_numpy(y))
        assert zt.dtype == torch.from_numpy(y).dtype
        np.testing.assert_allclose(zt.numpy(), z, rtol=1e-6)
        assert (np.abs(t.inverse_target(zt).numpy() - y) <= tol * (1 + y)).all()
    assert t.forward_target(np.array([1e8]))[0] == pytest.approx(
        (np.log10(1 + 1e8) - 2.5) / 3, rel=1e-12
    )
    assert t.empty_value == t.forward_target(np.zeros(1))[0] == pytest.approx(-2.5 / 3)


def test_inputs_are_normalised_per_channel():
    t = FieldTransform([1.0, 2.0], [0.5, 4.0], log=True)
    x = np.full((3, 2, 2, 2, 2), 99.0)  # (B, C, n, n, n): log10(1 + 99) = 2
    out = t.forward_input(x)
    np.testing.assert_allclose(out[:, 0], (2 - 1) / 0.5)
    np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(t.forward_input(torch.from_numpy(x)).numpy(), out, atol=1e-12)
    linear = FieldTransform([1.0], [2.0], log=False)
    assert linear.forward_input(np.full((1, 1, 1, 1), 5.0)).item() == 2.0
    assert linear.inverse_target(linear.forward_target(np.array([7.0])))[0] == 7.0


def test_statistics_come_from_the_training_region_only():
    grid = 16
    splits = make_splits(grid, preset=None, test=[0, 6], val=[8, 13], guard=1)
    rng = np.random.default_rng(0)
    field = rng.lognormal(5.0, 2.0, (grid,) * 3).astype(np.float32)
    mask = splits.train_mask
    field[~mask] = 1e12  # would dominate if held-out or guard voxels leaked in
    logs = np.log10(1 + field[mask].astype(np.float64))
    mean, std = region_moments(field, splits, chunk_voxels=3 * grid * grid)
    assert mean == pytest.approx(logs.mean(), rel=1e-10)
    assert std == pytest.approx(logs.std(), rel=1e-8)
    t = fit_transform([field, np.zeros_like(field)], field, splits)
    assert t.input_mean[0] == pytest.approx(logs.mean(), rel=1e-10)
    assert t.input_std[1] == 1.0  # a constant channel stays invertible
    assert t.target_std == pytest.approx(logs.std(), rel=1e-8)
    plain = fit_transform([field], field, splits, standardize=False)
    assert (plain.target_mean, plain.target_std) == (0.0, 1.0)


def test_state_dict_round_trip_and_bad_values():
    t = FieldTransform([1.0, 2.0], [0.5, 3.0], 2.5, 3.0)
    u = FieldTransform([0.0, 0.0], [1.0, 1.0])
    u.load_state_dict(t.state_dict())
    assert u.state_dict() == t.state_dict()
    with pytest.raises(ValueError, match="std must be > 0"):
        FieldTransform([0.0], [0.0])
    with pytest.raises(ValueError, match="one value per channel"):
        FieldTransform([0.0, 1.0], [1.0])


def test_predictions_stay_below_the_training_maximum(tmp_path):
    """fit_transform records the training region's largest target; inverse_prediction bounds
    a network's output by it, while inverse_target stays the exact inverse."""
    grid = 8
    splits = make_splits(grid, preset=None, test=[0, 2], val=[4, 6])
    target = np.zeros((grid,) * 3, dtype=np.float32)
    target[7, 7, 7] = 1e10  # training region
    target[0, 0, 0] = 1e13  # held out: must not raise the bound
    t = fit_transform([target], target, splits)
    assert t.target_max == pytest.approx(1e10)
    y = t.forward_target(torch.tensor([0.0, 1e9, 1e12], dtype=torch.float64))
    np.testing.assert_allclose(t.inverse_prediction(y).numpy(), [0.0, 1e9, 1e10], rtol=1e-9)
    np.testing.assert_allclose(t.inverse_target(y).numpy(), [0.0, 1e9, 1e12], rtol=1e-9)
    assert FieldTransform(**t.state_dict()).target_max == t.target_max
