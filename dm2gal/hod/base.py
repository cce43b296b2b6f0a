"""Shared parts of the HOD benchmarks: input checks, the training split, painting.

An HOD is fitted on galaxies (and gravity-only hosts) outside the held-out regions only, then
populates every gravity-only host of the box. Positions are comoving Mpc/h, masses Msun/h.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog
from dm2gal.io.paint import paint

IsHeldout = Callable[[np.ndarray], np.ndarray]


def check_halos(halos: HaloCatalog) -> None:
    """Raise ``ValueError`` naming the key if a host catalogue is malformed."""
    n = len(halos.mass)
    pos = np.asarray(halos.pos)
    if pos.shape != (n, 3):
        raise ValueError(f"halos.pos must have shape ({n}, 3) like halos.mass, got {pos.shape}")
    if np.shape(halos.n_sub) != (n,):
        raise ValueError(f"halos.n_sub must have shape ({n},), got {np.shape(halos.n_sub)}")
    if not np.isfinite(pos).all():
        raise ValueError("halos.pos contains non-finite values")
    if not (np.isfinite(halos.mass).all() and (np.asarray(halos.mass) > 0).all()):
        raise ValueError("halos.mass must be finite and > 0 Msun/h")
    if (np.asarray(halos.n_sub) < 1).any():
        raise ValueError("halos.n_sub must be >= 1 (it counts the central subhalo)")


def check_galaxies(galaxies: GalaxyCatalog) -> None:
    """Raise ``ValueError`` naming the key if a galaxy catalogue is malformed."""
    n = len(galaxies.mstar)
    if np.shape(galaxies.pos) != (n, 3):
        raise ValueError(f"galaxies.pos must have shape ({n}, 3), got {np.shape(galaxies.pos)}")
    for key in ("host", "central", "host_mass"):
        if np.shape(getattr(galaxies, key)) != (n,):
            raise ValueError(f"galaxies.{key} must have shape ({n},) like galaxies.mstar")
    if not np.isfinite(galaxies.pos).all():
        raise ValueError("galaxies.pos contains non-finite values")
    if not (np.isfinite(galaxies.mstar).all() and (np.asarray(galaxies.mstar) >= 0).all()):
        raise ValueError("galaxies.mstar must be finite and >= 0 Msun/h")


def training_galaxies(
    halos: HaloCatalog, galaxies: GalaxyCatalog, is_heldout: IsHeldout
) -> tuple[np.ndarray, np.ndarray]:
    """Return boolean masks of the hosts and the usable galaxies outside the held-out regions.

    A galaxy is usable if it lies outside the held-out regions, has a host (``host >= 0``), a
    positive stellar mass and a positive, finite host mass.
    """
    check_halos(halos)
    check_galaxies(galaxies)
    masks = []
    for what, pos in (("halos", halos.pos), ("galaxies", galaxies.pos)):
        held = np.asarray(is_heldout(np.asarray(pos)))
        if held.shape != (len(pos),) or held.dtype != bool:
            raise ValueError(
                f"is_heldout({what}.pos) must return a bool array of shape ({len(pos)},), "
                f"got {held.dtype} {held.shape}"
            )
        masks.append(~held)
    hm = np.asarray(galaxies.host_mass, dtype=np.float64)
    usable = (np.asarray(galaxies.host) >= 0) & (np.asarray(galaxies.mstar) > 0)
    usable &= np.isfinite(hm) & (hm > 0)
    return masks[0], masks[1] & usable


class HOD(ABC):
    """A halo occupation benchmark: ``fit`` on the training region, then ``sample``/``paint``."""

    name: str

    @abstractmethod
    def fit(
        self, halos: HaloCatalog, galaxies: GalaxyCatalog, is_heldout: IsHeldout, box: float
    ) -> HOD:
        """Fit on hosts and galaxies outside ``is_heldout``; ``box`` is the side in Mpc/h."""

    @abstractmethod
    def sample(self, halos: HaloCatalog, seed: int, box: float) -> tuple[np.ndarray, np.ndarray]:
        """Populate ``halos``: ``(n, 3)`` positions wrapped into ``[0, box)`` and ``(n,)`` M*."""

    @abstractmethod
    def fitted_params(self) -> dict[str, Any]:
        """The fitted parameters as plain JSON-serialisable values."""

    def paint(self, halos: HaloCatalog, grid: int, box: float, seed: int) -> np.ndarray:
        """Stellar mass per voxel (Msun/h, float32 ``grid^3``), CIC-painted like the target."""
        pos, mstar = self.sample(halos, seed, box)
        return paint(pos, mstar, grid, box, "CIC")

    def _require_fitted(self) -> None:
        if not getattr(self, "fitted", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(...) first")
