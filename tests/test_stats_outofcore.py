"""The out-of-core P(k) / r(k) equals the in-memory torch path, Pylians and analytic values."""

from __future__ import annotations

import numpy as np
import pytest
from test_stats import plane_wave, white_noise
from test_stats_torch import lognormal

from dm2gal.io.store import FieldStore, StoreError
from dm2gal.stats import pylians as stats
from dm2gal.stats import torch_backend
from dm2gal.stats.outofcore import cross_power, store_cross_power

BOX = 75.0  # Mpc/h
KEYS = ("pk_a", "pk_b", "pk_ab", "r")


def assert_same(got, want, rtol: float) -> None:
    """Same bins; P_a, P_b within ``rtol``; P_ab and r within ``rtol`` of sqrt(P_a P_b) and 1
    (a cross power near zero is resolved relative to the auto powers, not to itself)."""
    np.testing.assert_array_equal(got.nmodes, want.nmodes)
    np.testing.assert_allclose(got.k, want.k, rtol=1e-12)
    np.testing.assert_allclose(got.pk_a, want.pk_a, rtol=rtol)
    np.testing.assert_allclose(got.pk_b, want.pk_b, rtol=rtol)
    scale = np.sqrt(want.pk_a * want.pk_b)
    np.testing.assert_allclose(got.pk_ab / scale, want.pk_ab / scale, rtol=0, atol=rtol)
    np.testing.assert_allclose(got.r, want.r, rtol=0, atol=rtol)


def store_with(root, **fields: np.ndarray) -> FieldStore:
    store = FieldStore(root)
    store.init(BOX, next(iter(fields.values())).shape[0])
    for name, field in fields.items():
        store.write(name, field)
    return store


@pytest.mark.parametrize(
    ("n", "planes", "mas", "spill", "rtol"),
    [
        (32, 5, "CIC", np.complex64, 1e-6),  # 5-plane slabs, 9-row pencils: neither divides 32
        (33, 4, "TSC", np.complex128, 1e-11),  # odd grid, no Nyquist plane
        (16, 0, "None", np.complex64, 1e-6),  # chunk of one voxel: one plane, one y-row at a time
    ],
)
def test_store_fields_match_the_in_memory_path(tmp_path, n, planes, mas, spill, rtol):
    a, b = lognormal(0, n), lognormal(1, n) + lognormal(0, n)
    store = store_with(tmp_path / "store", truth=a, pred=b)
    work = tmp_path / "work"
    got = store_cross_power(
        store, "truth", store, "pred", mas, work_dir=work,
        chunk_voxels=max(1, planes * n * n), spill_dtype=spill,
    )  # fmt: skip
    assert_same(got, torch_backend.cross_power(a, b, BOX, mas), rtol)
    assert list(work.iterdir()) == []  # the spill file is gone


def test_arrays_and_paths_agree_and_match_pylians(tmp_path):
    a, b = lognormal(2, 32), lognormal(3, 32) + lognormal(2, 32)
    np.save(tmp_path / "b.npy", b.astype(">f4"))  # a big-endian file reads the same
    got = cross_power(a, tmp_path / "b.npy", BOX, work_dir=tmp_path / "w", chunk_voxels=3000)
    assert_same(got, cross_power(a, b, BOX, work_dir=tmp_path / "w"), 1e-12)
    ref = stats.cross_power(a, b, BOX)
    np.testing.assert_allclose(got.k, ref.k, rtol=1e-12)
    for key in KEYS:
        np.testing.assert_allclose(getattr(got, key), getattr(ref, key), rtol=1e-4, err_msg=key)
    assert got.r[:5].min() > 0.3 and got.r.max() < 1.0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_plane_wave_power_in_one_bin_with_exact_amplitude(tmp_path, axis):
    n, m, amp = 64, 3, 0.5
    wave = np.ascontiguousarray(np.moveaxis(plane_wave(m, amp, n), 0, axis))
    got = cross_power(wave, wave, BOX, "None", work_dir=tmp_path, chunk_voxels=7 * n * n)
    hit = m - 1  # bins start at |n| in [1, 2)
    assert np.max(np.abs(np.delete(got.pk_a, hit))) < 1e-9 * got.pk_a[hit]
    # one independent mode (m, 0, 0) carries |delta_k|^2 = (N^3 amp / 2)^2
    assert got.pk_a[hit] == pytest.approx(BOX**3 * amp**2 / 4 / got.nmodes[hit], rel=1e-6)
    assert got.r[hit] == pytest.approx(1.0, rel=1e-12)


def test_white_noise_shot_noise_and_independent_fields(tmp_path):
    n = 48
    a, b = white_noise(0, n=n), white_noise(1, n=n)
    got = cross_power(a, b, BOX, "None", work_dir=tmp_path, chunk_voxels=11 * n * n)
    assert_same(got, torch_backend.cross_power(a, b, BOX, "None"), 1e-6)
    shot = BOX**3 / n**3 * stats.overdensity(a).var(dtype=np.float64)
    assert np.sum(got.pk_a * got.nmodes) / np.sum(got.nmodes) == pytest.approx(shot, rel=1e-3)
    assert got.nmodes.sum() == (n**3 - 8) // 2 + 8 - 1  # every independent mode but DC
    assert np.all(np.abs(got.r) < 5.0 / np.sqrt(got.nmodes))


def test_a_failure_midway_leaves_no_spill_file(tmp_path):
    a, b = lognormal(4, 16), lognormal(5, 16)
    b[-1, 3, 3] = np.nan  # found in the last slab, after the spill was written
    with pytest.raises(ValueError, match=r"b: non-finite values in x-planes 14:16"):
        cross_power(a, b, BOX, work_dir=tmp_path, chunk_voxels=2 * 16 * 16)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda s, t: store_cross_power(s, "truth", t, "truth"), StoreError, r"16\^3.*8\^3"),
        (lambda s, t: cross_power(s.path("truth"), t.path("truth"), BOX), ValueError,
         r"must share a grid: .*truth.npy is 16\^3, .*truth.npy is 8\^3"),
        (lambda s, t: store_cross_power(s, "truth", s, "pred"), StoreError, "no field 'pred'"),
        (lambda s, t: cross_power(np.ones((4, 4, 4)), np.ones((4, 4, 4)), BOX), TypeError,
         "a: expected a float32 field, got float64"),
        (lambda s, t: cross_power(np.ones((4, 4, 5), np.float32), np.ones((4, 4, 4)), BOX),
         ValueError, r"a: expected a cubic"),
        (lambda s, t: cross_power(np.zeros((4,) * 3, np.float32), np.ones((4,) * 3, np.float32),
                                  BOX), ValueError, "a: mean must be > 0"),
        (lambda s, t: cross_power(s.root / "none.npy", s.path("truth"), BOX), StoreError,
         "none.npy: field file not found"),
        (lambda s, t: store_cross_power(s, "truth", s, "truth", chunk_voxels=0), ValueError,
         "chunk_voxels: expected an integer >= 1"),
    ],
)  # fmt: skip
def test_bad_inputs_raise_clear_errors(tmp_path, make, error, match):
    small = store_with(tmp_path / "small", truth=lognormal(6, 8))
    store = store_with(tmp_path / "store", truth=lognormal(7, 16))
    with pytest.raises(error, match=match):
        make(store, small)
    assert not list(tmp_path.glob("**/.spill.*"))
