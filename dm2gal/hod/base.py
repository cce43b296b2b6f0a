"""Shared parts of the HOD benchmarks: input checks, the training split, draws and means.

An HOD is fitted on galaxies (and gravity-only hosts) outside the held-out regions only, then
populates every gravity-only host of the box. Positions are comoving Mpc/h, masses Msun/h.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from dm2gal.hod.environment import Environment
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
    """A halo occupation benchmark: ``fit`` on the training region, then ``sample`` a random
    draw or give the ``mean`` (the expected stellar mass of every host, placed like a draw's
    galaxies), each painted with CIC like the target.

    An HOD that ``needs_environment`` is given the gravity-only environment
    (:class:`dm2gal.hod.environment.Environment`) of the boxes it fits and populates; the
    others ignore ``env``.
    """

    name: str
    needs_environment: bool = False
    #: the catalogues' halo mass definition it was fitted on (None: not recorded)
    mass_definition: str | None = None

    @abstractmethod
    def fit(
        self,
        halos: HaloCatalog,
        galaxies: GalaxyCatalog,
        is_heldout: IsHeldout,
        box: float,
        env: Environment | None = None,
    ) -> HOD:
        """Fit on hosts and galaxies outside ``is_heldout``; ``box`` is the side in Mpc/h."""

    @abstractmethod
    def sample(
        self, halos: HaloCatalog, seed: int, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Populate ``halos``: ``(n, 3)`` positions wrapped into ``[0, box)`` and ``(n,)`` M*."""

    @abstractmethod
    def mean(
        self, halos: HaloCatalog, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The expectation of :meth:`sample` as weighted points: ``(n, 3)`` positions in
        ``[0, box)`` and ``(n,)`` expected M* (Msun/h), whose CIC field is the mean field."""

    @abstractmethod
    def fitted_params(self) -> dict[str, Any]:
        """The fitted parameters as plain JSON-serialisable values."""

    def paint(
        self, halos: HaloCatalog, grid: int, box: float, seed: int, env: Environment | None = None
    ) -> np.ndarray:
        """A random draw's stellar mass per voxel (Msun/h, float32 ``grid^3``), CIC-painted like
        the target."""
        pos, mstar = self.sample(halos, seed, box, env)
        return paint(pos, mstar, grid, box, "CIC")

    def paint_mean(
        self, halos: HaloCatalog, grid: int, box: float, env: Environment | None = None
    ) -> np.ndarray:
        """The expected stellar mass per voxel (Msun/h, float32 ``grid^3``), CIC like a draw."""
        pos, mstar = self.mean(halos, box, env)
        return paint(pos, mstar, grid, box, "CIC")

    def _require_fitted(self) -> None:
        if not getattr(self, "fitted", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(...) first")

    def _require_environment(self, env: Environment | None) -> Environment:
        if env is None:
            raise ValueError(
                f"HOD '{self.name}' conditions on the environment: give the gravity-only DM "
                "field of the boxes (env=Environment(...))"
            )
        return env


def fibonacci_directions(n: int) -> np.ndarray:
    """``(n, 3)`` unit vectors spread evenly over the sphere (a Fibonacci lattice): the fixed
    directions of a mean field's satellites, so the mean is deterministic."""
    i = np.arange(n) + 0.5
    cos_theta = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + np.sqrt(5.0)) * i
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    return np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=1)
