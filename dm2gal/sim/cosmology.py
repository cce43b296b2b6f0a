"""Flat LCDM background, linear growth and the linear matter power spectrum of the mock.

The default is the Planck15 cosmology of IllustrisTNG. Growth follows the exact integral
solution of the linear growth equation for flat LCDM without radiation (Heath 1977), normalised
to ``D(a=1) = 1``; the linear ``P(k)`` at z=0 comes from colossus (Eisenstein & Hu 1998 transfer
function, normalised to ``sigma8``). Lengths are Mpc/h, wavenumbers h/Mpc, time in units of 1/H0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
from scipy.integrate import quad

RHO_CRIT = 2.775e11  # critical density today, h^2 Msun / Mpc^3 (i.e. Msun/h per (Mpc/h)^3)


@dataclass(frozen=True)
class Cosmology:
    """Flat LCDM parameters (defaults: TNG / Planck15)."""

    Om0: float = 0.3089
    Ob0: float = 0.0486
    H0: float = 67.74
    sigma8: float = 0.8159
    ns: float = 0.9667

    def __post_init__(self) -> None:
        for key in ("Om0", "H0", "sigma8", "ns"):
            if not getattr(self, key) > 0:
                raise ValueError(f"cosmology.{key} must be > 0, got {getattr(self, key)}")
        if not 0 <= self.Ob0 < self.Om0 <= 1:
            raise ValueError(f"need 0 <= Ob0 < Om0 <= 1, got Ob0={self.Ob0}, Om0={self.Om0}")

    @property
    def h(self) -> float:
        return self.H0 / 100.0

    @property
    def rho_m(self) -> float:
        """Mean comoving matter density, Msun/h per (Mpc/h)^3."""
        return self.Om0 * RHO_CRIT

    def E(self, a: np.ndarray | float) -> np.ndarray | float:
        """Dimensionless Hubble rate H(a)/H0."""
        return np.sqrt(self.Om0 * np.asarray(a, dtype=float) ** -3 + (1.0 - self.Om0))

    def omega_m(self, a: np.ndarray | float) -> np.ndarray | float:
        """Matter density parameter at scale factor ``a``."""
        return self.Om0 * np.asarray(a, dtype=float) ** -3 / self.E(a) ** 2

    def _growth_unnormalised(self, a: float) -> tuple[float, float]:
        """Growing mode ``D(a)`` and ``dD/da`` with ``D -> a`` as ``a -> 0``."""
        integral = quad(lambda x: (x * self.E(x)) ** -3, 0.0, a, epsabs=0, epsrel=1e-10)[0]
        e = self.E(a)
        de_da = -1.5 * self.Om0 * a**-4 / e
        c = 2.5 * self.Om0
        return c * e * integral, c * (de_da * integral + 1.0 / (a**3 * e**2))

    @cached_property
    def _d0(self) -> float:
        return self._growth_unnormalised(1.0)[0]

    def growth(self, a: float) -> float:
        """Linear growth factor ``D1(a)``, normalised to 1 at a=1."""
        return self._growth_unnormalised(a)[0] / self._d0

    def growth_rate(self, a: float) -> float:
        """Logarithmic growth rate ``f1 = dlnD1/dlna``."""
        d, dd = self._growth_unnormalised(a)
        return a * dd / d

    def growth_rate2(self, a: float) -> float:
        """Second-order growth rate ``f2 ~= 2 Omega_m(a)^(6/11)`` (Bouchet et al. 1995)."""
        return float(2.0 * self.omega_m(a) ** (6.0 / 11.0))

    def momentum_factor(self, a: float) -> float:
        """``G_p(a) = a^3 E(a) dD1/da``: linear momentum per unit displacement (FastPM)."""
        return a**3 * float(self.E(a)) * self._growth_unnormalised(a)[1] / self._d0

    def force_factor(self, a: float) -> float:
        """``G_f(a) = a^2 E dG_p/da = 1.5 Om0 D1(a)``: linear force per unit displacement."""
        return 1.5 * self.Om0 * self.growth(a)

    @cached_property
    def _colossus(self):
        from colossus.cosmology import cosmology  # lazy: heavy, only for the mock

        params = {
            "flat": True,
            "H0": self.H0,
            "Om0": self.Om0,
            "Ob0": self.Ob0,
            "sigma8": self.sigma8,
            "ns": self.ns,
            "relspecies": False,
            "persistence": "",
        }
        name = "dm2gal_" + "_".join(f"{v:g}" for v in asdict(self).values())
        return cosmology.Cosmology(name=name, **params)  # not made current: no global effect

    def power_linear(self, k: np.ndarray) -> np.ndarray:
        """Linear matter power spectrum at z=0, (Mpc/h)^3, for ``k`` > 0 in h/Mpc (colossus)."""
        k = np.asarray(k, dtype=float)
        return np.asarray(self._colossus.matterPowerSpectrum(k, z=0.0), dtype=float)

    def colossus(self):
        """The matching colossus cosmology object (made current in colossus)."""
        from colossus.cosmology import cosmology  # lazy: heavy, only for the mock

        cosmology.setCurrent(self._colossus)
        return self._colossus
