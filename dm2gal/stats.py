"""Reference statistics of mass fields with Pylians: P(k), r(k), B(k1, k2, theta), xi(r), PDF.

Every function takes mass-per-voxel fields (float32, Msun/h) on an ``N^3`` grid of a cube of side
``box`` (Mpc/h), converts them to overdensity ``delta = field / mean - 1`` and lets Pylians
deconvolve the mass-assignment window (``mas``: ``"CIC"`` for CIC-painted fields, ``"None"`` for a
field with no window). Wavenumbers are in h/Mpc, P(k) in (Mpc/h)^3, B in (Mpc/h)^6, r in Mpc/h.
Inputs are validated here first (Pylians calls ``sys.exit`` on bad input); Pylians runs quietly.

Non-periodic sub-volumes (the held-out test cube): every estimator here is an FFT estimator and
treats its input as periodic, as the dm2gal paper did. A sub-cube cut out of a larger box is
therefore wrapped onto itself, and its edge discontinuity leaks a little power from low to high
k. Pass the sub-cube's own side as ``box`` (``size * L / N``). Because truth, network predictions
and HOD benchmarks are cut from the same region and measured the same way, their ratios and
cross-correlations (which are what the reports quote) compare like with like; absolute P(k)
values of a sub-cube are those of its periodic tiling, not of the parent box.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

MAS_NAMES = ("None", "NGP", "CIC", "TSC", "PCS")
# The paper's bispectrum configurations (k1, k2) in h/Mpc; valid on a 75 Mpc/h box at 128^3.
DEFAULT_K_PAIRS = ((0.5, 0.6), (1.0, 1.2))
DEFAULT_THETAS = np.linspace(0.0, np.pi, 10)


@dataclass(frozen=True)
class PowerSpectrum:
    """Auto power spectrum: bin-mean ``k`` [h/Mpc], ``pk`` [(Mpc/h)^3], independent ``nmodes``."""

    k: np.ndarray
    pk: np.ndarray
    nmodes: np.ndarray


@dataclass(frozen=True)
class CrossPower:
    """Auto and cross power of two fields and r(k) = P_ab / sqrt(P_a P_b)."""

    k: np.ndarray
    pk_a: np.ndarray
    pk_b: np.ndarray
    pk_ab: np.ndarray
    r: np.ndarray
    nmodes: np.ndarray


@dataclass(frozen=True)
class Bispectrum:
    """B(k1, k2, theta) [(Mpc/h)^6] and reduced Q; ``k3 = |k1 + k2|`` [h/Mpc] per angle."""

    k1: float
    k2: float
    theta: np.ndarray
    k3: np.ndarray
    B: np.ndarray
    Q: np.ndarray


# -- validation ---------------------------------------------------------------------------------
def check_mas(mas: str | None) -> str:
    """Return the Pylians MAS name (``None`` means ``"None"``); raise on an unknown one."""
    mas = "None" if mas is None else mas
    if mas not in MAS_NAMES:
        raise ValueError(f"mas must be one of {MAS_NAMES}, got {mas!r}")
    return mas


def check_box(box: float) -> float:
    """Return the box side as a float; raise unless it is a finite positive length in Mpc/h."""
    if not np.isfinite(box) or not box > 0:
        raise ValueError(f"box size must be a finite length > 0 Mpc/h, got {box}")
    return float(box)


def check_field(field: np.ndarray, name: str = "field") -> np.ndarray:
    """Return ``field`` as a C-contiguous float32 cube; raise if it is not a finite float32 cube."""
    field = np.asarray(field)
    if field.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {field.dtype}")
    if field.ndim != 3 or len(set(field.shape)) != 1 or field.shape[0] < 2:
        raise ValueError(f"{name} must be a cubic (N, N, N) grid with N >= 2, got {field.shape}")
    if not np.isfinite(field).all():
        raise ValueError(f"{name} contains non-finite values")
    return np.ascontiguousarray(field)


def fundamental(box: float) -> float:
    """Fundamental wavenumber ``kF = 2 pi / box`` [h/Mpc]."""
    return 2.0 * np.pi / check_box(box)


def nyquist(box: float, grid: int) -> float:
    """Nyquist wavenumber ``kN = (grid // 2) kF`` [h/Mpc]."""
    return (grid // 2) * fundamental(box)


def check_triangle(k1: float, k2: float, theta: np.ndarray, box: float, grid: int) -> np.ndarray:
    """Validate a bispectrum configuration; return ``k3 = |k1 + k2|`` [h/Mpc] per angle.

    Each side's shell ``[k - kF, k + kF)`` must contain modes of the grid: ``kF <= k1, k2`` and
    ``k1 + k2 + kF <= sqrt(3) kN``; ``theta`` is a 1-D array of finite angles in radians.
    """
    kf, kmax = fundamental(box), np.sqrt(3.0) * nyquist(box, grid)
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 1 or theta.size == 0 or not np.isfinite(theta).all():
        raise ValueError(f"theta must be a non-empty 1-D array of finite radians, got {theta}")
    for name, k in (("k1", k1), ("k2", k2)):
        if not np.isfinite(k) or k < kf:
            raise ValueError(f"{name}={k} h/Mpc is below the fundamental kF={kf:.4g} h/Mpc")
    if k1 + k2 + kf > kmax:
        raise ValueError(
            f"k1 + k2 = {k1 + k2} h/Mpc is beyond the grid's reach (sqrt(3) kN - kF = "
            f"{kmax - kf:.4g} h/Mpc for box={box} Mpc/h, grid={grid})"
        )
    return np.sqrt((k2 * np.sin(theta)) ** 2 + (k2 * np.cos(theta) + k1) ** 2)


def overdensity(field: np.ndarray) -> np.ndarray:
    """Return the float32 overdensity ``field / mean - 1`` of a mass field (float64 mean)."""
    field = check_field(field)
    mean = field.mean(dtype=np.float64)
    if not mean > 0:
        raise ValueError(f"field mean must be > 0 to form an overdensity, got {mean}")
    return (field / mean - 1.0).astype(np.float32)


@contextlib.contextmanager
def _quiet_pylians(what: str) -> Iterator[None]:
    """Silence Pylians' prints; turn its ``sys.exit`` into a RuntimeError naming ``what``."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    except SystemExit as exc:
        raise RuntimeError(f"Pylians {what} failed: {buffer.getvalue().strip()}") from exc


# -- statistics ---------------------------------------------------------------------------------
def power_spectrum(
    field: np.ndarray, box: float, mas: str | None = "CIC", threads: int = 1
) -> PowerSpectrum:
    """Monopole P(k) of the overdensity of a mass field (Pylians ``Pk``), window-corrected."""
    import Pk_library as pkl

    box, mas = check_box(box), check_mas(mas)
    delta = overdensity(field)
    with _quiet_pylians("Pk"):
        res = pkl.Pk(delta, box, axis=0, MAS=mas, threads=threads, verbose=False)
    return PowerSpectrum(k=res.k3D, pk=res.Pk[:, 0], nmodes=res.Nmodes3D)


def cross_power(
    a: np.ndarray, b: np.ndarray, box: float, mas: str | None = "CIC", threads: int = 1
) -> CrossPower:
    """Auto and cross P(k) of two mass fields and r(k) (Pylians ``XPk``), window-corrected."""
    import Pk_library as pkl

    box, mas = check_box(box), check_mas(mas)
    a, b = check_field(a, "a"), check_field(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"fields must share a grid, got {a.shape} and {b.shape}")
    with _quiet_pylians("XPk"):
        res = pkl.XPk(
            [overdensity(a), overdensity(b)], box, axis=0, MAS=[mas, mas], threads=threads
        )
    pk_a, pk_b, pk_ab = res.Pk[:, 0, 0], res.Pk[:, 0, 1], res.XPk[:, 0, 0]
    return CrossPower(
        k=res.k3D, pk_a=pk_a, pk_b=pk_b, pk_ab=pk_ab, r=pk_ab / np.sqrt(pk_a * pk_b),
        nmodes=res.Nmodes3D,
    )  # fmt: skip


def bispectrum(
    field: np.ndarray,
    box: float,
    k1: float,
    k2: float,
    theta: Sequence[float] | np.ndarray = DEFAULT_THETAS,
    mas: str | None = "CIC",
    threads: int = 1,
) -> Bispectrum:
    """B(k1, k2, theta) and Q of a mass field's overdensity (Pylians ``Bk``), window-corrected.

    ``theta`` [rad] is the angle between the k1 and k2 vectors; each side is a shell of
    half-width kF around its magnitude.
    """
    import Pk_library as pkl

    box, mas = check_box(box), check_mas(mas)
    delta = overdensity(field)
    theta = np.asarray(theta, dtype=np.float64)
    k3 = check_triangle(k1, k2, theta, box, delta.shape[0])
    with _quiet_pylians("Bk"):
        res = pkl.Bk(delta, box, float(k1), float(k2), theta, mas, threads)
    return Bispectrum(k1=float(k1), k2=float(k2), theta=theta, k3=k3, B=res.B, Q=res.Q)


def correlation_function(
    field: np.ndarray, box: float, mas: str | None = "CIC", threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Monopole xi(r) of a mass field's overdensity (Pylians ``Xi``): (r [Mpc/h], xi)."""
    import Pk_library as pkl

    box, mas = check_box(box), check_mas(mas)
    delta = overdensity(field)
    with _quiet_pylians("Xi"):
        res = pkl.Xi(delta, box, MAS=mas, axis=0, threads=threads)
    return res.r3D, res.xi[:, 0]


def voxel_pdf(field: np.ndarray, bins: int | np.ndarray = 50) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of log10(mass per voxel / (Msun/h)) over the non-empty voxels.

    ``bins`` is a count (spanning the non-empty range) or an array of edges in log10(Msun/h).
    The density is normalised by the number of all voxels, so it integrates to the fraction of
    non-empty voxels. Returns ``(edges, density)``.
    """
    field = check_field(field)
    if (field < 0).any():
        raise ValueError("a mass field cannot be negative: voxel_pdf needs masses >= 0")
    logm = np.log10(field[field > 0].astype(np.float64))
    if np.ndim(bins) == 0 and logm.size == 0:
        raise ValueError("field has no non-empty voxels to spread over a bin count; give edges")
    counts, edges = np.histogram(logm, bins=bins)
    return edges, counts / (field.size * np.diff(edges))


def summary(
    truth: np.ndarray,
    pred: np.ndarray,
    box: float,
    *,
    k_max: float | None = None,
    mas: str | None = "CIC",
    threads: int = 1,
    cross: CrossPower | None = None,
) -> dict[str, float]:
    """Scalar scores of ``pred`` against ``truth`` (both mass fields on the same grid).

    Keys: ``total_mass_rel_err`` ((sum pred - sum truth) / sum truth), ``pk_ratio_abs_err``
    (mean |P_pred / P_truth - 1| over k bins with k <= k_max), ``rk_mean`` and ``rk_min`` (r(k)
    over the same bins), ``log_rmse`` (rms of log10(1 + M) differences per voxel, negative
    predicted masses counted as 0) and ``k_max``
    [h/Mpc] (default: the Nyquist wavenumber). ``cross`` reuses an already computed
    ``cross_power(truth, pred, box, mas)``.
    """
    truth, pred = check_field(truth, "truth"), check_field(pred, "pred")
    xp = cross_power(truth, pred, box, mas=mas, threads=threads) if cross is None else cross
    k_max = nyquist(box, truth.shape[0]) if k_max is None else float(k_max)
    sel = xp.k <= k_max
    if not sel.any():
        raise ValueError(f"k_max={k_max} h/Mpc is below the first k bin ({xp.k[0]:.4g} h/Mpc)")
    total_t = truth.sum(dtype=np.float64)
    log_diff = np.log1p(np.clip(pred, 0, None, dtype=np.float64)) - np.log1p(
        truth.astype(np.float64)
    )
    return {
        "total_mass_rel_err": float(pred.sum(dtype=np.float64) / total_t - 1.0),
        "pk_ratio_abs_err": float(np.mean(np.abs(xp.pk_b[sel] / xp.pk_a[sel] - 1.0))),
        "rk_mean": float(np.mean(xp.r[sel])),
        "rk_min": float(np.min(xp.r[sel])),
        "log_rmse": float(np.sqrt(np.mean(log_diff**2)) / np.log(10.0)),
        "k_max": k_max,
    }
