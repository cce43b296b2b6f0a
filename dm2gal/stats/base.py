"""What both statistics implementations share: result types, input checks, wavenumbers, the
overdensity, the voxel PDF and the scalar scores. Units: k [h/Mpc], P [(Mpc/h)^3], B [(Mpc/h)^6],
masses Msun/h per voxel, box sides Mpc/h. See :mod:`dm2gal.stats.pylians` (the reference) and
:mod:`dm2gal.stats.torch_backend` (torch, any device) for the estimators and the periodicity
convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: window corrections (mass-assignment schemes) the estimators deconvolve
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


#: decades of voxel mass (log10 Msun/h, lower edges) whose voxel counts pdf_decade_abs_err compares
PDF_DECADES = (8, 9, 10, 11, 12)
#: a decade holding fewer truth voxels is left out of pdf_decade_abs_err (counting noise)
PDF_MIN_COUNT = 50


def pdf_decade_abs_err(truth: np.ndarray, pred: np.ndarray) -> float:
    """The largest ``|N_pred / N_truth - 1|`` over the :data:`PDF_DECADES` of voxel mass that
    hold at least :data:`PDF_MIN_COUNT` truth voxels (N: voxels with mass in the decade); NaN
    when none does."""
    edges = 10.0 ** np.array([*PDF_DECADES, PDF_DECADES[-1] + 1], dtype=np.float64)
    n_truth = np.histogram(truth, bins=edges)[0]
    n_pred = np.histogram(pred, bins=edges)[0]
    sel = n_truth >= PDF_MIN_COUNT
    return float(np.max(np.abs(n_pred[sel] / n_truth[sel] - 1.0))) if sel.any() else float("nan")


def scores(
    truth: np.ndarray,
    pred: np.ndarray,
    box: float,
    *,
    k_max: float | None = None,
    cross: CrossPower,
) -> dict[str, float]:
    """Scalar scores of ``pred`` against ``truth`` (both mass fields on the same grid).

    Keys: ``total_mass_rel_err`` ((sum pred - sum truth) / sum truth), ``pk_ratio_abs_err``
    (mean |P_pred / P_truth - 1| over k bins with k <= k_max), ``rk_mean`` and ``rk_min`` (r(k)
    over the same bins), ``log_rmse`` (rms of log10(1 + M) differences per voxel, negative
    predicted masses counted as 0), ``pdf_decade_abs_err`` (:func:`pdf_decade_abs_err`) and
    ``k_max``
    [h/Mpc] (default: the Nyquist wavenumber). ``cross`` is ``cross_power(truth, pred, box,
    mas)`` of either implementation (:mod:`dm2gal.stats.pylians` or
    :mod:`dm2gal.stats.torch_backend`).
    """
    truth, pred = check_field(truth, "truth"), check_field(pred, "pred")
    xp = cross
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
        "pdf_decade_abs_err": pdf_decade_abs_err(truth, pred),
        "k_max": k_max,
    }
