"""Torch P(k), r(k) and FFT bispectrum, on any device, matching Pylians bin for bin.

Inputs are mass-per-voxel tensors (float32 or float64, ``(N, N, N)``) of a periodic cube of side
``box`` (Mpc/h); they are turned into overdensity ``field / mean - 1`` and the mass-assignment
window is deconvolved (``mas``) exactly as ``dm2gal.stats`` (Pylians) does. FFTs and bispectrum
sums run in the input's precision, P(k) bin sums in float64. Outputs are float64 tensors on the
input's device: k [h/Mpc], P [(Mpc/h)^3], B [(Mpc/h)^6]. A float32 FFT (here or in Pylians)
resolves power only down to ~1e-7 of the largest mode's; for a P(k) spanning more than ~1e5
pass float64 fields.

Binning follows Pylians ``Pk``: a mode with integer wave vector n (units of kF = 2 pi / box)
falls in bin ``floor(|n|)``; each independent mode counts once (on the n_z = 0 and Nyquist
planes of the half-complex grid only one of each conjugate pair); the bin's k is the mean |k| of
its modes and the DC bin is dropped. The bispectrum follows Pylians ``Bk``: each side is the shell
``k - kF <= |k| < k + kF``; one shell-filtered field (and shell indicator) per distinct
magnitude is transformed back to real space, and B is the sum of the triple product normalised
by the triangle count. Non-periodic sub-volumes are treated as periodic (see ``dm2gal.stats``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dm2gal.stats import check_box, check_mas, check_triangle

_MAS_POWER = {"None": 0, "NGP": 1, "CIC": 2, "TSC": 3, "PCS": 4}


@dataclass(frozen=True)
class _Modes:
    """Field-independent half-complex mode tables of one grid, mas, device and precision."""

    kabs: torch.Tensor  # |n| per half-complex mode, float64, shape (N, N, N//2 + 1)
    window: torch.Tensor  # mass-assignment deconvolution factor per mode (field precision)
    index: torch.Tensor  # flat bin index floor(|n|) per mode (int32)
    weight2: torch.Tensor  # counted-mode mask times window^2 (float64, flat)
    kmean: torch.Tensor  # mean |n| per bin, DC bin dropped (float64)
    nmodes: torch.Tensor  # independent modes per bin, DC bin dropped (float64)


def _check_field(field: torch.Tensor, name: str = "field") -> torch.Tensor:
    """Raise unless ``field`` is a finite float32/float64 cube tensor."""
    if not isinstance(field, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(field).__name__}")
    if field.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {field.dtype}")
    if field.ndim != 3 or len(set(field.shape)) != 1 or field.shape[0] < 2:
        raise ValueError(
            f"{name} must be a cubic (N, N, N) grid with N >= 2, got {tuple(field.shape)}"
        )
    if not torch.isfinite(field).all():
        raise ValueError(f"{name} contains non-finite values")
    return field


@functools.lru_cache(maxsize=8)
def _modes(n: int, mas: str, device: torch.device, dtype: torch.dtype) -> _Modes:
    """Build (once per grid, mas, device and dtype) the mode tables Pylians' loops use."""
    middle = n // 2
    f64 = {"dtype": torch.float64, "device": device}
    full = torch.fft.fftfreq(n, d=1.0 / n, **f64)  # integer frequencies, Nyquist negative
    full = torch.where(full == -middle, float(middle), full) if n % 2 == 0 else full
    half = torch.arange(middle + 1, **f64)
    nx, ny, nz = full[:, None, None], full[None, :, None], half[None, None, :]
    kabs = torch.sqrt(nx**2 + ny**2 + nz**2)

    def deconv(x: torch.Tensor) -> torch.Tensor:
        arg = math.pi / n * x
        safe = torch.where(arg == 0, 1.0, arg)
        return torch.where(arg == 0, 1.0, safe / torch.sin(safe)) ** _MAS_POWER[mas]

    window = deconv(nx) * deconv(ny) * deconv(nz)
    # On the nz = 0 and nz = Nyquist planes keep one mode of each conjugate pair (Pylians' rule).
    edge_z = (nz == 0) | ((nz == middle) & (n % 2 == 0))
    edge_x = (nx == 0) | ((nx == middle) & (n % 2 == 0))
    counted = ~(edge_z & ((nx < 0) | (edge_x & (ny < 0))))
    index = kabs.to(torch.int32)
    nbins = int(math.isqrt(3 * middle * middle)) + 1
    flat_index = index.reshape(-1)
    w = counted.to(torch.float64).reshape(-1)
    nmodes = torch.zeros(nbins, **f64).index_add_(0, flat_index, w)
    ksum = torch.zeros(nbins, **f64).index_add_(0, flat_index, w * kabs.reshape(-1))
    return _Modes(
        kabs=kabs,
        window=window.to(dtype),
        index=flat_index,
        weight2=w * window.reshape(-1) ** 2,
        kmean=ksum[1:] / nmodes[1:],
        nmodes=nmodes[1:],
    )


def _delta_k(field: torch.Tensor, name: str = "field") -> torch.Tensor:
    """Unnormalised half-complex FFT of a mass field's overdensity (no window correction)."""
    field = _check_field(field, name)
    mean = field.mean(dtype=torch.float64)
    if not mean > 0:
        raise ValueError(f"{name} mean must be > 0 to form an overdensity, got {float(mean)}")
    return torch.fft.rfftn(field / mean.to(field.dtype) - 1.0)


def _bin(modes: _Modes, power: torch.Tensor, box: float, n: int) -> torch.Tensor:
    """Bin-average a per-mode power (|delta_k|^2-like) and give it (Mpc/h)^3 units."""
    values = power.reshape(-1).to(torch.float64) * modes.weight2
    total = torch.zeros(modes.nmodes.numel() + 1, dtype=torch.float64, device=power.device)
    total.index_add_(0, modes.index, values)
    return total[1:] / modes.nmodes * (box / n**2) ** 3


def power_spectrum_torch(
    field: torch.Tensor, box: float, mas: str | None = "CIC"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Monopole P(k) of a mass field's overdensity: ``(k [h/Mpc], pk [(Mpc/h)^3], nmodes)``."""
    box, mas = check_box(box), check_mas(mas)
    dk = _delta_k(field)
    n = field.shape[0]
    modes = _modes(n, mas, field.device, field.dtype)
    pk = _bin(modes, dk.real**2 + dk.imag**2, box, n)
    return modes.kmean * (2.0 * math.pi / box), pk, modes.nmodes


def cross_power_torch(
    a: torch.Tensor, b: torch.Tensor, box: float, mas: str | None = "CIC"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Auto and cross P(k) of two mass fields and ``r = P_ab / sqrt(P_a P_b)``.

    Returns ``(k, pk_a, pk_b, pk_ab, r)`` as in Pylians ``XPk``.
    """
    box, mas = check_box(box), check_mas(mas)
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        raise ValueError(
            f"fields must share grid, dtype and device: {tuple(a.shape)} {a.dtype} {a.device} vs "
            f"{tuple(b.shape)} {b.dtype} {b.device}"
        )
    da, db = _delta_k(a, "a"), _delta_k(b, "b")
    n = a.shape[0]
    modes = _modes(n, mas, a.device, a.dtype)
    pk_a = _bin(modes, da.real**2 + da.imag**2, box, n)
    pk_b = _bin(modes, db.real**2 + db.imag**2, box, n)
    pk_ab = _bin(modes, da.real * db.real + da.imag * db.imag, box, n)
    k = modes.kmean * (2.0 * math.pi / box)
    return k, pk_a, pk_b, pk_ab, pk_ab / torch.sqrt(pk_a * pk_b)


Triangles = Sequence[tuple[float, float, float]] | tuple[float, float, Sequence[float] | np.ndarray]


def _triangle_list(triangles: Triangles) -> list[tuple[float, float, float]]:
    """Normalise ``[(k1, k2, theta), ...]`` or ``(k1, k2, thetas)`` into a list of triangles."""
    if isinstance(triangles, tuple) and len(triangles) == 3 and np.ndim(triangles[2]) == 1:
        k1, k2, thetas = triangles
        return [(float(k1), float(k2), float(t)) for t in np.asarray(thetas, dtype=np.float64)]
    out = [tuple(float(v) for v in tri) for tri in triangles]
    if not out or any(len(tri) != 3 for tri in out):
        raise ValueError(f"triangles must be [(k1, k2, theta), ...] or (k1, k2, thetas), got {out}")
    return out


def bispectrum_torch(
    field: torch.Tensor, box: float, triangles: Triangles, mas: str | None = "CIC"
) -> tuple[torch.Tensor, torch.Tensor]:
    """B(k1, k2, theta) [(Mpc/h)^6] and Q of a mass field's overdensity for every triangle.

    Each distinct (k1, k2) pair's two shell fields are built once and multiplied; every k3
    shell then costs two inverse FFTs and two reductions. Returns float64 ``(B, Q)`` tensors in
    the order of ``triangles`` (see ``_triangle_list`` for the accepted forms).
    """
    box, mas = check_box(box), check_mas(mas)
    dk = _delta_k(field)
    n = field.shape[0]
    tris = _triangle_list(triangles)
    k3s = [float(check_triangle(k1, k2, np.array([t]), box, n)[0]) for k1, k2, t in tris]
    modes = _modes(n, mas, field.device, field.dtype)
    dk = dk * modes.window
    kf = 2.0 * math.pi / box
    shape = (n, n, n)

    def shell(k: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Real-space shell-filtered field, shell indicator, and the shell's P(k) [(Mpc/h)^3]."""
        inside = (modes.kabs >= (k - kf) / kf) & (modes.kabs < (k + kf) / kf)
        d = torch.fft.irfftn(dk * inside, s=shape, norm="forward")
        i = torch.fft.irfftn(inside.to(dk.dtype), s=shape, norm="forward")
        pk = (d * d).sum().double() / (i * i).sum().double()
        return d, i, pk * (box / n**2) ** 3

    b_out = torch.empty(len(tris), dtype=torch.float64, device=field.device)
    q_out = torch.empty_like(b_out)
    pairs: dict[tuple[float, float], list[int]] = {}
    for j, (k1, k2, _) in enumerate(tris):
        pairs.setdefault((k1, k2), []).append(j)
    for (k1, k2), members in pairs.items():
        d1, i1, p1 = shell(k1)
        d2, i2, p2 = shell(k2)
        d12, i12 = d1 * d2, i1 * i2
        del d1, d2, i1, i2
        for j in members:
            d3, i3, p3 = shell(k3s[j])
            count = (i12 * i3).sum().double()
            b = (d12 * d3).sum().double() / count * (box**2 / n**3) ** 3
            b_out[j] = b
            q_out[j] = b / (p1 * p2 + p1 * p3 + p2 * p3)
    return b_out, q_out
