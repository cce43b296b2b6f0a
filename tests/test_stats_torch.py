"""The torch P(k), r(k) and bispectrum reproduce Pylians on the same fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dm2gal.stats import base
from dm2gal.stats import pylians as stats
from dm2gal.stats.torch_backend import (
    _plan,
    bispectrum_torch,
    clear_caches,
    cross_power_torch,
    power_spectrum_torch,
)

BOX = 75.0  # Mpc/h


def lognormal(seed: int, n: int, smooth: float = 1.0) -> np.ndarray:
    """Correlated, skewed float32 mass field: exp of a Gaussian smoothed over ``smooth`` voxels."""
    rng = np.random.default_rng(seed)
    gk = np.fft.rfftn(rng.standard_normal((n, n, n)))
    f = np.fft.fftfreq(n)
    k2 = f[:, None, None] ** 2 + f[None, :, None] ** 2 + np.fft.rfftfreq(n)[None, None, :] ** 2
    g = np.fft.irfftn(gk * np.exp(-0.5 * k2 * (2 * np.pi * smooth) ** 2), s=(n, n, n))
    return (1e9 * np.exp(g / g.std())).astype(np.float32)


@pytest.mark.parametrize(("n", "mas"), [(32, "CIC"), (16, "TSC"), (15, "None")])
def test_power_spectrum_matches_pylians(n, mas):
    field = lognormal(0, n)
    ref = stats.power_spectrum(field, BOX, mas=mas)
    k, pk, nmodes = power_spectrum_torch(torch.from_numpy(field), BOX, mas=mas)
    np.testing.assert_array_equal(nmodes.numpy(), ref.nmodes)
    np.testing.assert_allclose(k.numpy(), ref.k, rtol=1e-12)
    np.testing.assert_allclose(pk.numpy(), ref.pk, rtol=1e-4)


def test_power_spectrum_float64_input_agrees():
    field = lognormal(1, 16)
    _, pk32, _ = power_spectrum_torch(torch.from_numpy(field), BOX)
    _, pk64, _ = power_spectrum_torch(torch.from_numpy(field.astype(np.float64)), BOX)
    assert pk64.dtype == torch.float64
    np.testing.assert_allclose(pk64.numpy(), pk32.numpy(), rtol=1e-5)


def test_cross_power_matches_pylians():
    a, b = lognormal(2, 32), lognormal(3, 32) + lognormal(2, 32)
    ref = stats.cross_power(a, b, BOX)
    k, pk_a, pk_b, pk_ab, r = cross_power_torch(torch.from_numpy(a), torch.from_numpy(b), BOX)
    np.testing.assert_allclose(k.numpy(), ref.k, rtol=1e-12)
    for got, want in ((pk_a, ref.pk_a), (pk_b, ref.pk_b), (pk_ab, ref.pk_ab)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4)
    np.testing.assert_allclose(r.numpy(), ref.r, rtol=1e-4)
    assert r[:5].min() > 0.3 and r.max() < 1.0


def test_bispectrum_matches_pylians_on_the_default_triangles():
    field = lognormal(4, 32)
    thetas = np.linspace(0.1, 3.0, 4)
    triangles = [(k1, k2, t) for k1, k2 in base.DEFAULT_K_PAIRS for t in thetas]
    b, q = bispectrum_torch(torch.from_numpy(field), BOX, triangles)
    want_b, want_q = [], []
    for k1, k2 in base.DEFAULT_K_PAIRS:
        ref = stats.bispectrum(field, BOX, k1, k2, thetas)
        want_b.extend(ref.B)
        want_q.extend(ref.Q)
    assert np.all(np.asarray(want_b) > 0)  # a skewed field: a real signal, not noise around 0
    np.testing.assert_allclose(b.numpy(), want_b, rtol=1e-3)
    np.testing.assert_allclose(q.numpy(), want_q, rtol=1e-3)
    b2, q2 = bispectrum_torch(torch.from_numpy(field), BOX, (1.0, 1.2, thetas))
    np.testing.assert_allclose(b2.numpy(), b[4:].numpy(), rtol=1e-12)


def test_bispectrum_matches_pylians_on_an_odd_grid_and_a_sub_grid():
    # On 33^3 the (0.5, 0.6) pair runs on a 32^3 sub-grid (even M, odd N), (1.0, 1.2) on the
    # full odd grid, whose half-complex grid has no Nyquist plane.
    n, thetas = 33, np.array([0.2, 1.5, 2.9])
    field = lognormal(7, n)
    triangles = [(k1, k2, t) for k1, k2 in base.DEFAULT_K_PAIRS for t in thetas]
    b, q = bispectrum_torch(torch.from_numpy(field), BOX, triangles)
    pairs = _plan(n, BOX, tuple(triangles), torch.device("cpu"), torch.float32)
    assert [p.m for p in pairs] == [32, 33]
    refs = [stats.bispectrum(field, BOX, k1, k2, thetas) for k1, k2 in base.DEFAULT_K_PAIRS]
    np.testing.assert_allclose(b.numpy(), np.concatenate([r.B for r in refs]), rtol=1e-3)
    np.testing.assert_allclose(q.numpy(), np.concatenate([r.Q for r in refs]), rtol=1e-3)


def test_bispectrum_cached_counts_do_not_depend_on_the_field_order():
    a, b = torch.from_numpy(lognormal(8, 24)), torch.from_numpy(lognormal(9, 24))
    triangles = (0.5, 0.6, np.linspace(0.0, np.pi, 5))
    clear_caches()
    first_a = bispectrum_torch(a, BOX, triangles)
    warm_b = bispectrum_torch(b, BOX, triangles)
    again_a = bispectrum_torch(a, BOX, triangles)
    clear_caches()
    cold_b = bispectrum_torch(b, BOX, triangles)
    for got, want in ((again_a, first_a), (warm_b, cold_b)):
        np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), rtol=1e-12)
        np.testing.assert_allclose(got[1].numpy(), want[1].numpy(), rtol=1e-12)


def test_bispectrum_pairs_sharing_shells_equal_separate_calls():
    field = torch.from_numpy(lognormal(10, 32))
    thetas = np.array([0.3, 1.2, 2.5])
    pairs = [(0.5, 0.6), (0.6, 0.5), (0.5, 0.5), (0.6, 0.9)]
    b, q = bispectrum_torch(field, BOX, [(k1, k2, t) for k1, k2 in pairs for t in thetas])
    apart = [bispectrum_torch(field, BOX, (k1, k2, thetas)) for k1, k2 in pairs]
    np.testing.assert_allclose(b.numpy(), torch.cat([x[0] for x in apart]).numpy(), rtol=1e-12)
    np.testing.assert_allclose(q.numpy(), torch.cat([x[1] for x in apart]).numpy(), rtol=1e-12)
    np.testing.assert_allclose(b[:3].numpy(), b[3:6].numpy(), rtol=1e-12)  # B(k1,k2)=B(k2,k1)
    ref = stats.bispectrum(field.numpy(), BOX, 0.5, 0.5, thetas)  # k1 = k2: one shell field
    np.testing.assert_allclose(b[6:9].numpy(), ref.B, rtol=1e-3)
    np.testing.assert_allclose(q[6:9].numpy(), ref.Q, rtol=1e-3)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda f: power_spectrum_torch(f.numpy(), BOX), TypeError, "torch.Tensor"),
        (lambda f: power_spectrum_torch(f.to(torch.int32), BOX), TypeError, "float32 or float64"),
        (lambda f: power_spectrum_torch(f[:4], BOX), ValueError, "cubic"),
        (lambda f: power_spectrum_torch(f, BOX, mas="cic"), ValueError, "mas must be one of"),
        (lambda f: power_spectrum_torch(f, 0.0), ValueError, "box size"),
        (lambda f: power_spectrum_torch(f * 0, BOX), ValueError, "mean must be > 0"),
        (lambda f: power_spectrum_torch(f / 0, BOX), ValueError, "non-finite"),
        (lambda f: cross_power_torch(f, f.double(), BOX), ValueError, "share grid"),
        (lambda f: bispectrum_torch(f, BOX, [(0.5, 9.0, 0.1)]), ValueError, "beyond the grid"),
        (lambda f: bispectrum_torch(f, BOX, [(0.5, 0.6)]), ValueError, "triangles must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.from_numpy(lognormal(5, 16)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    field = torch.from_numpy(lognormal(6, 32))
    _, pk_cpu, _ = power_spectrum_torch(field, BOX)
    _, pk_gpu, _ = power_spectrum_torch(field.cuda(), BOX)
    np.testing.assert_allclose(pk_gpu.cpu().numpy(), pk_cpu.numpy(), rtol=1e-5)
    b_cpu, _ = bispectrum_torch(field, BOX, (0.5, 0.6, [0.3, 2.0]))
    b_gpu, _ = bispectrum_torch(field.cuda(), BOX, (0.5, 0.6, [0.3, 2.0]))
    np.testing.assert_allclose(b_gpu.cpu().numpy(), b_cpu.numpy(), rtol=1e-4)
