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

import numpy as np

from dm2gal.stats.base import (
    DEFAULT_THETAS,
    Bispectrum,
    CrossPower,
    PowerSpectrum,
    check_box,
    check_field,
    check_mas,
    check_triangle,
    overdensity,
    scores,
)


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
    import Pk_library as pkl  # lazy: GPU machines run the torch path without Pylians

    box, mas = check_box(box), check_mas(mas)
    delta = overdensity(field)
    with _quiet_pylians("Pk"):
        res = pkl.Pk(delta, box, axis=0, MAS=mas, threads=threads, verbose=False)
    return PowerSpectrum(k=res.k3D, pk=res.Pk[:, 0], nmodes=res.Nmodes3D)


def cross_power(
    a: np.ndarray, b: np.ndarray, box: float, mas: str | None = "CIC", threads: int = 1
) -> CrossPower:
    """Auto and cross P(k) of two mass fields and r(k) (Pylians ``XPk``), window-corrected."""
    import Pk_library as pkl  # lazy: GPU machines run the torch path without Pylians

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
    import Pk_library as pkl  # lazy: GPU machines run the torch path without Pylians

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
    import Pk_library as pkl  # lazy: GPU machines run the torch path without Pylians

    box, mas = check_box(box), check_mas(mas)
    delta = overdensity(field)
    with _quiet_pylians("Xi"):
        res = pkl.Xi(delta, box, MAS=mas, axis=0, threads=threads)
    return res.r3D, res.xi[:, 0]


def bispectra(
    field: np.ndarray,
    box: float,
    k_pairs: Sequence[tuple[float, float]],
    theta: Sequence[float] | np.ndarray = DEFAULT_THETAS,
    mas: str | None = "CIC",
    threads: int = 1,
) -> list[Bispectrum]:
    """:func:`bispectrum` for each (k1, k2) of ``k_pairs`` at the angles ``theta``."""
    return [bispectrum(field, box, k1, k2, theta, mas, threads) for k1, k2 in k_pairs]


def summary(
    truth: np.ndarray,
    pred: np.ndarray,
    box: float,
    *,
    k_max: float | None = None,
    mas: str | None = "CIC",
    threads: int = 1,
) -> dict[str, float]:
    """:func:`dm2gal.stats.base.scores` of ``pred`` against ``truth`` with Pylians' r(k)."""
    return scores(truth, pred, box, k_max=k_max, cross=cross_power(truth, pred, box, mas, threads))
