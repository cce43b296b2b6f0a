"""Torch P(k), r(k) and FFT bispectrum, on any device, matching Pylians bin for bin.

Inputs are mass-per-voxel tensors (float32 or float64, ``(N, N, N)``) of a periodic cube of side
``box`` (Mpc/h); they are turned into overdensity ``field / mean - 1`` and the mass-assignment
window is deconvolved (``mas``) exactly as ``dm2gal.stats.pylians`` (Pylians) does. FFTs run in the
input's precision, all sums over modes in float64. Outputs are float64 tensors on the input's
device: k [h/Mpc], P [(Mpc/h)^3], B [(Mpc/h)^6]. A float32 FFT (here or in Pylians) resolves
power only down to ~1e-7 of the largest mode's; for a P(k) spanning more than ~1e5 pass float64
fields.

Binning follows Pylians ``Pk``: a mode with integer wave vector n (units of kF = 2 pi / box)
falls in bin ``floor(|n|)``; each independent mode counts once (on the n_z = 0 and Nyquist
planes of the half-complex grid only one of each conjugate pair); the bin's k is the mean |k| of
its modes and the DC bin is dropped.

The bispectrum follows Pylians ``Bk``: each side is the shell ``k - kF <= |k| < k + kF``, and
``B = sum_x d1 d2 d3 / sum_x i1 i2 i3`` with d the shell-filtered overdensity and i the shell
indicator in real space. A direct evaluation transforms every shell (field and indicator) back
to real space. Here, per (k1, k2) pair, only d1 and d2 are transformed back (unnormalised), their
product goes forward once (D12), and by Parseval ``sum_x d12 d3`` is the full-grid sum of
``Re(delta_k conj(D12))`` over the k3 shell (delta_k window-corrected; on the half-complex grid
weight 2 for 0 < n_z < N/2, 1 on the n_z = 0 and Nyquist planes). So every triangle is a
float64 sum over its shell's modes (a slice of the modes sorted by |n|), with no FFT of its
own; the shell powers of Q are such sums too. As the shells are band-limited, each pair runs on
the smallest fast M^3 grid (M <= N) on which its triples are alias-free exactly where they are
on the N grid, so B is unchanged while the pair's FFTs shrink (see ``_pair_grid``). The
triangle and mode counts depend on the grid, box and triangle set but not on the field: they
are cached, so the truth, model and HOD fields pay for them once.
Non-periodic sub-volumes are treated as periodic (see ``dm2gal.stats.pylians``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dm2gal.stats.base import (
    Bispectrum,
    CrossPower,
    check_box,
    check_field,
    check_mas,
    check_triangle,
)

_MAS_POWER = {"None": 0, "NGP": 1, "CIC": 2, "TSC": 3, "PCS": 4}


@dataclass(frozen=True)
class _Modes:
    """Field-independent half-complex mode tables of one grid, mas, device and precision."""

    index: torch.Tensor  # flat bin index floor(|n|) per mode (int32)
    weight2: torch.Tensor  # counted-mode mask times window^2 (float64, flat)
    kmean: torch.Tensor  # mean |n| per bin, DC bin dropped (float64)
    nmodes: torch.Tensor  # independent modes per bin, DC bin dropped (float64)


def _check_field(field: torch.Tensor, name: str = "field") -> torch.Tensor:
    """Raise unless ``field`` is a float32/float64 cube tensor (finiteness: ``_delta_k``)."""
    if not isinstance(field, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(field).__name__}")
    if field.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {field.dtype}")
    if field.ndim != 3 or len(set(field.shape)) != 1 or field.shape[0] < 2:
        raise ValueError(
            f"{name} must be a cubic (N, N, N) grid with N >= 2, got {tuple(field.shape)}"
        )
    return field


def _deconvolution(x: torch.Tensor, n: int, mas: str) -> torch.Tensor:
    """Mass-assignment deconvolution factor along one axis at integer frequencies x of an N grid."""
    arg = math.pi / n * x
    safe = torch.where(arg == 0, 1.0, arg)
    return torch.where(arg == 0, 1.0, safe / torch.sin(safe)) ** _MAS_POWER[mas]


def frequencies(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer wave numbers (units of kF) of an N grid in FFT order, float64; an even grid's
    Nyquist one counted positive (Pylians' convention)."""
    middle = n // 2
    full = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device)
    return torch.where(full == -middle, float(middle), full) if n % 2 == 0 else full


def n_bins(n: int) -> int:
    """Number of ``floor(|n|)`` bins of an N grid, the DC bin included."""
    return math.isqrt(3 * (n // 2) ** 2) + 1


def mode_block(
    n: int, mas: str, ny: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per half-complex mode of an N grid with every n_x, the wave numbers ``ny`` (a slice of
    :func:`frequencies`) and every n_z >= 0, each ``(N, len(ny), N // 2 + 1)``: the bin index
    ``floor(|n|)`` (int32), ``|n|`` (float64), whether Pylians counts the mode (1.0 or 0.0: on
    the n_z = 0 and Nyquist planes only one of each conjugate pair) and the squared window
    deconvolution (float64)."""
    middle = n // 2
    half = torch.arange(middle + 1, dtype=torch.float64, device=ny.device)
    nx, ny, nz = frequencies(n, ny.device)[:, None, None], ny[None, :, None], half[None, None, :]
    kabs = torch.sqrt(nx**2 + ny**2 + nz**2)
    window = _deconvolution(nx, n, mas) * _deconvolution(ny, n, mas) * _deconvolution(nz, n, mas)
    edge_z = (nz == 0) | ((nz == middle) & (n % 2 == 0))
    edge_x = (nx == 0) | ((nx == middle) & (n % 2 == 0))
    counted = ~(edge_z & ((nx < 0) | (edge_x & (ny < 0))))
    return kabs.to(torch.int32), kabs, counted.to(torch.float64), window**2


@functools.lru_cache(maxsize=8)
def _modes(n: int, mas: str, device: torch.device) -> _Modes:
    """Build (once per grid, mas and device) the mode tables Pylians' loops use."""
    index, kabs, counted, window2 = mode_block(n, mas, frequencies(n, device))
    flat_index = index.reshape(-1)
    w = counted.reshape(-1)
    nmodes = torch.bincount(flat_index, weights=w, minlength=n_bins(n))
    ksum = torch.bincount(flat_index, weights=w * kabs.reshape(-1), minlength=n_bins(n))
    return _Modes(
        index=flat_index,
        weight2=w * window2.reshape(-1),
        kmean=ksum[1:] / nmodes[1:],
        nmodes=nmodes[1:],
    )


def _delta_k(field: torch.Tensor, name: str = "field") -> torch.Tensor:
    """Unnormalised half-complex FFT of a mass field's overdensity (no window correction)."""
    field = _check_field(field, name)
    # The mean in the field's precision: torch's cascade sum keeps a float32 mean to ~1e-7
    # (scaling P by ~2e-7), and a float64 mean of a float32 field costs a slow cast pass on the
    # CPU. It is non-finite exactly when a voxel is (or the sum overflows, which no mass field
    # nears), so every voxel is checked without a pass of its own.
    mean = field.mean()
    if not torch.isfinite(mean):
        raise ValueError(f"{name} contains non-finite values")
    if not mean > 0:
        raise ValueError(f"{name} mean must be > 0 to form an overdensity, got {float(mean)}")
    return torch.fft.rfftn(torch.div(field, mean).sub_(1.0))


def _bin(modes: _Modes, power: torch.Tensor, box: float, n: int) -> torch.Tensor:
    """Bin-average a per-mode power (|delta_k|^2-like) and give it (Mpc/h)^3 units.

    The per-mode values are formed in the input's precision and summed in float64 (one
    full-size float64 temporary). ``bincount`` rather than ``index_add_``: on a GPU,
    ``index_add_`` of N^3/2 modes into ~N bins makes every thread atomically add to the same few
    addresses, while CUDA ``bincount`` accumulates per-block histograms in shared memory when the
    bins fit (PyTorch's SummaryOps.cu). The GPU gain was not measured (no GPU was available); on
    a 2-core CPU bincount was 1.2-1.9x faster at 128^3-256^3 with bit-identical sums.
    """
    values = power.reshape(-1).double().mul_(modes.weight2)
    total = torch.bincount(modes.index, weights=values, minlength=modes.nmodes.numel() + 1)
    return total[1:] / modes.nmodes * (box / n**2) ** 3


def power_spectrum_torch(
    field: torch.Tensor, box: float, mas: str | None = "CIC"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Monopole P(k) of a mass field's overdensity: ``(k [h/Mpc], pk [(Mpc/h)^3], nmodes)``."""
    box, mas = check_box(box), check_mas(mas)
    dk = _delta_k(field)
    n = field.shape[0]
    modes = _modes(n, mas, field.device)
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
    modes = _modes(n, mas, a.device)
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


@dataclass(frozen=True)
class _Grid:
    """Half-complex tables of an ``(M, M, M)`` grid with the modes sorted by |n|."""

    kabs: torch.Tensor  # |n| per half-complex mode, float64, shape (M, M, M//2 + 1)
    order: torch.Tensor  # flat mode indices in ascending |n| (int64)
    kabs_sorted: torch.Tensor  # |n| in that order (float64)
    weight: torch.Tensor  # full-grid multiplicity (1 or 2) of each mode in that order (float64)


@functools.lru_cache(maxsize=4)
def _grid(m: int, device: torch.device) -> _Grid:
    """Build (once per size and device) the sorted half-complex mode table of an M^3 grid."""
    f64 = {"dtype": torch.float64, "device": device}
    full = torch.fft.fftfreq(m, d=1.0 / m, **f64)
    half = torch.arange(m // 2 + 1, **f64)
    kabs = torch.sqrt(
        full[:, None, None] ** 2 + full[None, :, None] ** 2 + half[None, None, :] ** 2
    )
    # A mode with 0 < n_z < M/2 stands for itself and its conjugate on the full grid.
    plane = (half == 0) | (half == m / 2)
    weight = torch.where(plane, 1.0, 2.0).expand(m, m, -1).reshape(-1)
    kabs_sorted, order = torch.sort(kabs.reshape(-1), stable=True)
    return _Grid(kabs=kabs, order=order, kabs_sorted=kabs_sorted, weight=weight[order])


@functools.lru_cache(maxsize=8)
def _window(m: int, n: int, mas: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Deconvolution factor of an N-grid field at each half-complex mode of the M grid."""
    full = torch.fft.fftfreq(m, d=1.0 / m, dtype=torch.float64, device=device)
    half = torch.arange(m // 2 + 1, dtype=torch.float64, device=device)
    wx, wz = _deconvolution(full, n, mas), _deconvolution(half, n, mas)
    return (wx[:, None, None] * wx[None, :, None] * wz[None, None, :]).to(dtype)


def _shell_edges(k: float, kf: float) -> tuple[float, float]:
    """Pylians' bispectrum shell ``k - kF <= |k| < k + kF`` as bounds on |n| (units of kF)."""
    return (k - kf) / kf, (k + kf) / kf


def _fft_size(need: int) -> int:
    """Smallest size of the form 2^a or 3 * 2^a that is >= ``need`` (fast FFT sizes)."""
    size = 1
    while size < need:
        size *= 2
    return 3 * size // 4 if size >= 4 and 3 * size // 4 >= need else size


@dataclass(frozen=True)
class _Pair:
    """One (k1, k2) pair of a triangle set: its grid, shells and field-independent sums."""

    k1: float  # h/Mpc, k1 <= k2
    k2: float
    members: torch.Tensor  # positions of the pair's triangles in the set (int64)
    m: int  # side of the grid the pair is evaluated on
    lo: torch.Tensor  # first sorted-mode index of each shell: k1, k2, then each k3 (int64)
    hi: torch.Tensor  # one past the last sorted-mode index of each shell (int64)
    length: int  # sorted modes up to the widest shell's edge: the only ones ever summed
    count: torch.Tensor  # per triangle: sum_x i1 i2 i3 on the M grid (float64)
    nmodes: torch.Tensor  # per shell (k1, k2, k3...): full-grid mode count (float64)


def _pair_grid(edges: list[tuple[float, float]], n: int) -> int:
    """Side M of the smallest fast grid on which the pair's shell triple sums equal the N grid's.

    A shell of upper edge ``hi`` holds integer components ``|n_i| <= R = ceil(hi) - 1``. On any
    grid with ``M > R1 + R2 + R3`` the only triples ``q1 + q2 + q3 = 0 (mod M)`` are the exact
    ones, as on the N grid, and ``M > 2 max R`` keeps every shell mode distinct; the sums then
    differ from the N grid's only by the common factor ``(M / N)^3``, which cancels in B. If no
    such M is below N, the N grid itself is used (aliasing included, as Pylians does).
    """
    reach = [math.ceil(hi) - 1 for _, hi in edges]
    r1, r2, r3 = reach[0], reach[1], max(reach[2:])
    m = _fft_size(max(r1 + r2 + r3 + 1, 2 * max(reach) + 1))
    return m if m < n else n


def _set_sums(
    pairs: Sequence[_Pair],
    source: Callable[[int], torch.Tensor],
    kf: float,
    device: torch.device,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shell sums of a half-complex field ``S = source(M)`` for every pair of a triangle set.

    Returns, per pair, ``(triple, power)``: ``triple[j] = sum_x s1 s2 s3`` for each k3 shell
    (``s = irfftn(S * shell)``, unnormalised) and ``power`` the full-grid ``sum |S|^2`` per
    shell (k1, k2, k3...). By Parseval ``sum_x s12 s3`` is the full-grid sum of
    ``Re(S conj(rfftn(s1 s2)))`` over the k3 shell: one forward FFT per pair, none per k3.
    Real-space shell fields are shared between pairs evaluated on the same grid.
    """
    sources: dict[int, torch.Tensor] = {}
    shells: dict[tuple[int, float], torch.Tensor] = {}
    uses = Counter((p.m, k) for p in pairs for k in {p.k1, p.k2})
    out = []
    for p in pairs:
        grid = _grid(p.m, device)
        if p.m not in sources:
            sources[p.m] = source(p.m)
        s = sources[p.m]

        def shell(k: float, p: _Pair = p, grid: _Grid = grid, s: torch.Tensor = s) -> torch.Tensor:
            """Real-space field of the shell around ``k``, dropped after its last use."""
            key = (p.m, k)
            if key not in shells:
                lo, hi = _shell_edges(k, kf)
                inside = (grid.kabs >= lo) & (grid.kabs < hi)
                shells[key] = torch.fft.irfftn(s * inside, s=(p.m,) * 3, norm="forward")
            uses[key] -= 1
            return shells[key] if uses[key] else shells.pop(key)

        d1 = shell(p.k1)
        product = torch.fft.rfftn(d1 * d1 if p.k2 == p.k1 else d1 * shell(p.k2))
        del d1
        idx, weight = grid.order[: p.length], grid.weight[: p.length]
        s_k = s.reshape(-1)[idx].to(torch.complex128)
        p_k = product.reshape(-1)[idx].to(torch.complex128)
        triple = _cumsum(weight * (s_k * p_k.conj()).real)
        power = _cumsum(weight * (s_k.real**2 + s_k.imag**2))
        out.append((triple[p.hi[2:]] - triple[p.lo[2:]], power[p.hi] - power[p.lo]))
    return out


def _cumsum(values: torch.Tensor) -> torch.Tensor:
    """Cumulative float64 sum with a leading zero, so that ``c[hi] - c[lo] = sum(v[lo:hi])``."""
    return torch.cat([values.new_zeros(1), torch.cumsum(values, 0)])


@functools.lru_cache(maxsize=8)
def _plan(
    n: int,
    box: float,
    triangles: tuple[tuple[float, float, float], ...],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[_Pair, ...]:
    """Group a triangle set into (k1, k2) pairs and compute their field-independent sums.

    The triangle counts ``sum_x i1 i2 i3`` (shell indicators i) and the shell mode counts depend
    only on the arguments, so they are computed once (by the field pipeline run on a field of
    ones) and reused for every field measured with the same set.
    """
    kf = 2.0 * math.pi / box
    groups: dict[tuple[float, float], list[int]] = {}
    k3s = []
    for j, (k1, k2, t) in enumerate(triangles):
        k3s.append(float(check_triangle(k1, k2, np.array([t]), box, n)[0]))
        groups.setdefault((min(k1, k2), max(k1, k2)), []).append(j)  # B is symmetric in k1, k2
    pairs = []
    for (k1, k2), members in groups.items():
        edges = [_shell_edges(k, kf) for k in (k1, k2, *(k3s[j] for j in members))]
        m = _pair_grid(edges, n)
        table = _grid(m, device).kabs_sorted
        lo, hi = (
            torch.searchsorted(table, torch.tensor(e, dtype=torch.float64, device=device))
            for e in zip(*edges, strict=True)
        )
        index = torch.tensor(members, device=device)
        empty = torch.empty(0, dtype=torch.float64, device=device)
        pairs.append(_Pair(k1, k2, index, m, lo, hi, int(hi.max()), count=empty, nmodes=empty))
    ones = functools.partial(_ones, dtype=dtype, device=device)
    sums = _set_sums(pairs, ones, kf, device)
    return tuple(
        dataclasses.replace(p, count=count, nmodes=nmodes)
        for p, (count, nmodes) in zip(pairs, sums, strict=True)
    )


def _ones(m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A half-complex field of ones on an M^3 grid: its shell fields are the shell indicators."""
    return torch.ones((m, m, m // 2 + 1), dtype=dtype, device=device)


def clear_caches() -> None:
    """Forget every cached mode table and triangle-set count (e.g. to time a cold call)."""
    _modes.cache_clear()
    _grid.cache_clear()
    _window.cache_clear()
    _plan.cache_clear()


def bispectrum_torch(
    field: torch.Tensor, box: float, triangles: Triangles, mas: str | None = "CIC"
) -> tuple[torch.Tensor, torch.Tensor]:
    """B(k1, k2, theta) [(Mpc/h)^6] and Q of a mass field's overdensity for every triangle.

    One forward FFT of the field on its N^3 grid; then, per distinct (k1, k2) pair, two inverse
    and one forward FFT on the pair's M^3 grid (M <= N, see ``_pair_grid``), and per triangle a
    sum over sorted modes. Triangle counts are cached per (grid, box, set, device, dtype).
    Returns float64 ``(B, Q)`` tensors in the order of ``triangles`` (see ``_triangle_list``).
    """
    box, mas = check_box(box), check_mas(mas)
    dk = _delta_k(field)
    n = field.shape[0]
    pairs = _plan(n, box, tuple(_triangle_list(triangles)), field.device, field.dtype)

    def source(m: int) -> torch.Tensor:
        """Window-corrected delta_k on the M grid: the N grid's modes with |n_i| < M / 2."""
        window = _window(m, n, mas, dk.device, field.dtype)
        if m == n:
            return dk * window
        r = (m - 1) // 2
        out = dk.new_zeros((m, m, m // 2 + 1))
        low, high = (slice(0, r + 1), slice(0, r + 1)), (slice(m - r, m), slice(n - r, n))
        for (x_m, x_n), (y_m, y_n) in itertools.product((low, high), repeat=2):
            out[x_m, y_m, : r + 1] = dk[x_n, y_n, : r + 1]
        return out.mul_(window)

    b_out = torch.empty(
        sum(p.members.numel() for p in pairs), dtype=torch.float64, device=dk.device
    )
    q_out = torch.empty_like(b_out)
    for p, (triple, power) in zip(
        pairs, _set_sums(pairs, source, 2.0 * math.pi / box, dk.device), strict=True
    ):
        b = triple / p.count * (box**2 / n**3) ** 3
        pk = power / p.nmodes * (box / n**2) ** 3
        p1, p2, p3 = pk[0], pk[1], pk[2:]
        b_out[p.members] = b
        q_out[p.members] = b / (p1 * p2 + p1 * p3 + p2 * p3)
    return b_out, q_out


# -- numpy in, numpy out: the same results as dm2gal.stats.pylians, for reports -----------------
def _tensor(field: np.ndarray, name: str, device: torch.device) -> torch.Tensor:
    """A checked float32 mass cube as a float64 tensor on ``device`` (float64: P(k) over many
    decades, as Pylians' double-precision sums)."""
    return torch.from_numpy(check_field(field, name)).to(device, torch.float64)


def cross_power(
    a: np.ndarray, b: np.ndarray, box: float, mas: str | None = "CIC", device: str = "cpu"
) -> CrossPower:
    """:func:`dm2gal.stats.pylians.cross_power` computed with torch on ``device``."""
    device = torch.device(device)
    if np.shape(a) != np.shape(b):
        raise ValueError(f"fields must share a grid, got {np.shape(a)} and {np.shape(b)}")
    k, pk_a, pk_b, pk_ab, r = cross_power_torch(
        _tensor(a, "a", device), _tensor(b, "b", device), box, mas
    )
    nmodes = _modes(np.shape(a)[0], check_mas(mas), device).nmodes
    out = [t.cpu().numpy() for t in (k, pk_a, pk_b, pk_ab, r, nmodes)]
    return CrossPower(*out)


def bispectra(
    field: np.ndarray,
    box: float,
    k_pairs: Sequence[tuple[float, float]],
    theta: Sequence[float] | np.ndarray,
    mas: str | None = "CIC",
    device: str = "cpu",
) -> list[Bispectrum]:
    """:func:`dm2gal.stats.pylians.bispectra` computed with torch on ``device`` (one call for the
    whole set: the field's FFT and the triangle counts are shared)."""
    theta = np.asarray(theta, dtype=np.float64)
    n = np.shape(field)[0]
    k3 = [check_triangle(k1, k2, theta, box, n) for k1, k2 in k_pairs]
    triangles = [(k1, k2, t) for k1, k2 in k_pairs for t in theta]
    b, q = bispectrum_torch(_tensor(field, "field", torch.device(device)), box, triangles, mas)
    b, q = b.cpu().numpy().reshape(len(k_pairs), -1), q.cpu().numpy().reshape(len(k_pairs), -1)
    return [
        Bispectrum(k1=float(k1), k2=float(k2), theta=theta, k3=k3[i], B=b[i], Q=q[i])
        for i, (k1, k2) in enumerate(k_pairs)
    ]
