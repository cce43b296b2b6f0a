"""Per-voxel noise: fixed by (seed, voxel), periodic, uniform, independent across seeds."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from dm2gal.infer.noise import row_seed, voxel_noise


def test_noise_is_a_function_of_seed_and_voxel() -> None:
    """A sub-box (wrapping at the box edges, with negative starts) is the same part of the
    whole box's noise; another seed gives other numbers."""
    grid = 12
    whole = voxel_noise(3, (0, 0, 0), (grid,) * 3, grid)
    part = voxel_noise(3, (10, -2, 5), (5, 4, 9), grid)
    index = [np.arange(s, s + n) % grid for s, n in ((10, 5), (-2, 4), (5, 9))]
    assert torch.equal(part, whole[:, index[0]][:, :, index[1]][:, :, :, index[2]])
    assert torch.equal(voxel_noise(3, (0, 0, 0), (grid,) * 3, grid), whole)
    other = voxel_noise(4, (0, 0, 0), (grid,) * 3, grid)
    assert not torch.isclose(other, whole).any()
    assert whole.shape == (3, grid, grid, grid) and whole.dtype == torch.float64


def test_noise_is_uniform_and_uncorrelated() -> None:
    """Kolmogorov-Smirnov against U(0, 1) per channel, and no correlation between seeds,
    channels or neighbouring rows beyond 4 standard errors."""
    grid = 24
    a = voxel_noise(0, (0, 0, 0), (grid,) * 3, grid)
    b = voxel_noise(1, (0, 0, 0), (grid,) * 3, grid)
    for channel in a:
        assert stats.kstest(channel.flatten().numpy(), "uniform").pvalue > 1e-3
    bound = 4 / np.sqrt(grid**3)
    pairs = [(a[0], b[0]), (a[0], a[1]), (a[2], a[2].roll(1, 1)), (a[1], a[1].roll(1, 0))]
    for x, y in pairs:
        assert abs(np.corrcoef(x.flatten().numpy(), y.flatten().numpy())[0, 1]) < bound
    assert len({row_seed(s, x, y) for s in range(3) for x in range(8) for y in range(8)}) == 192
