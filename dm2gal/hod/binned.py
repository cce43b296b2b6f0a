"""The paper's empirical binned HOD, fitted on the training region only.

Hosts are binned in log10 mass (the gravity-only mass for the hosts to populate, the galaxies'
own ``host_mass`` for the hydro/mock galaxies). Per bin, fitted on training data only:

* centrals: every host gets a central with probability ``p_cen`` = (training centrals in the
  bin) / (training gravity-only hosts in the bin), capped at 1; its stellar mass is drawn from
  the training centrals of the bin; it sits at the host centre.
* satellites: the expected count of a host is its satellite subhalos ``n_sub - 1`` times the
  bin's ratio (training satellites) / (satellite subhalos of the training gravity-only hosts),
  the paper's subhalo-count scaling applied to the count instead of the mass; the count is the
  expectation's floor plus a Bernoulli draw of its fraction (exactly ``n_sub - 1`` when the
  ratio is 1, as in the paper). Each satellite draws one training satellite of the bin and takes
  its stellar mass and its offset from its host's central galaxy (periodic minimum image), so
  mass and radius stay correlated; training satellites whose central is not a training galaxy
  are left out (their offset is unknown without a held-out position).

Unlike the paper: no held-out galaxy is ever used, draws are seeded, hosts without a central
galaxy are flagged correctly (the paper marked subhalo -1 as a central), and hosts outside the
bin range are put in the end bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dm2gal.hod.base import HOD, IsHeldout, training_galaxies
from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog


class BinnedHOD(HOD):
    """Empirical HOD on ``n_bins`` equal log10-mass bins (or explicit ``log_mass_edges``).

    Args:
        n_bins: number of bins spanning the training hosts' and galaxies' log10 mass range.
        log_mass_edges: explicit increasing bin edges in log10(M / (Msun/h)); overrides n_bins.
        name: benchmark name (the field is stored as ``hod_<name>``).
    """

    def __init__(
        self, n_bins: int = 10, log_mass_edges: list[float] | None = None, name: str = "binned"
    ):
        if log_mass_edges is not None:
            edges = np.asarray(log_mass_edges, dtype=np.float64)
            if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
                raise ValueError(
                    f"log_mass_edges must be >= 2 increasing values, got {log_mass_edges}"
                )
        elif int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
        self.n_bins = int(n_bins) if log_mass_edges is None else len(log_mass_edges) - 1
        self.log_mass_edges = log_mass_edges
        self.name = name
        self.fitted = False

    def _bin(self, mass: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.edges_, np.log10(mass), side="right") - 1
        return np.clip(idx, 0, self.n_bins - 1)

    def fit(
        self, halos: HaloCatalog, galaxies: GalaxyCatalog, is_heldout: IsHeldout, box: float
    ) -> BinnedHOD:
        """Fit occupation fractions and draw pools on training hosts and galaxies only."""
        if not box > 0:
            raise ValueError(f"box size must be > 0 Mpc/h, got {box}")
        h_tr, g_tr = training_galaxies(halos, galaxies, is_heldout)
        central = np.asarray(galaxies.central, dtype=bool)
        cen = np.flatnonzero(g_tr & central)
        sat = np.flatnonzero(g_tr & ~central)
        if len(cen) == 0 or not h_tr.any():
            raise ValueError(
                "BinnedHOD.fit: no training central galaxies or hosts outside the held-out regions"
            )
        host_mass = np.asarray(galaxies.host_mass, dtype=np.float64)
        if self.log_mass_edges is None:
            logm = np.log10(np.concatenate([host_mass[g_tr], halos.mass[h_tr]]))
            self.edges_ = np.linspace(logm.min(), logm.max(), self.n_bins + 1)
        else:
            self.edges_ = np.asarray(self.log_mass_edges, dtype=np.float64)

        # satellites keep their offset from the training central of their own host
        host = np.asarray(galaxies.host)
        cen_of_host = dict(zip(host[cen].tolist(), cen.tolist(), strict=True))
        if len(cen_of_host) < len(cen):
            dup = np.unique(host[cen], return_counts=True)
            raise ValueError(
                f"galaxies.central: hosts {dup[0][dup[1] > 1][:5].tolist()} have more than one "
                "central galaxy (expected at most one per host)"
            )
        partner = np.array([cen_of_host.get(h, -1) for h in host[sat].tolist()], dtype=np.int64)
        sat = sat[partner >= 0]
        partner = partner[partner >= 0]
        offset = np.asarray(galaxies.pos[sat], np.float64) - galaxies.pos[partner]
        offset -= box * np.round(offset / box)

        h_bin = self._bin(halos.mass[h_tr])
        n_host = np.bincount(h_bin, minlength=self.n_bins)
        sites = np.bincount(h_bin, weights=halos.n_sub[h_tr] - 1.0, minlength=self.n_bins)
        self.cen_pool_ = _Pool(self._bin(host_mass[cen]), galaxies.mstar[cen], self.n_bins)
        self.sat_pool_ = _Pool(self._bin(host_mass[sat]), galaxies.mstar[sat], self.n_bins, offset)
        n_cen, n_sat = self.cen_pool_.count, self.sat_pool_.count
        with np.errstate(divide="ignore", invalid="ignore"):
            self.p_cen_ = np.where(n_host > 0, np.minimum(n_cen / n_host, 1.0), n_cen > 0)
            self.sat_ratio_ = np.where(sites > 0, n_sat / sites, 0.0)
        self.fitted = True
        return self

    def sample(self, halos: HaloCatalog, seed: int, box: float) -> tuple[np.ndarray, np.ndarray]:
        """Populate every host; return positions (Mpc/h, in ``[0, box)``) and M* (Msun/h)."""
        self._require_fitted()
        rng = np.random.default_rng(seed)
        b = self._bin(np.asarray(halos.mass, dtype=np.float64))
        has_cen = rng.random(len(b)) < self.p_cen_[b]
        cen_mstar, _ = self.cen_pool_.draw(b[has_cen], rng)

        expect = (np.asarray(halos.n_sub, dtype=np.float64) - 1.0) * self.sat_ratio_[b]
        n_sat = np.floor(expect).astype(np.int64)
        n_sat += rng.random(len(b)) < expect - n_sat
        sat_host = np.repeat(np.arange(len(b)), n_sat)
        sat_mstar, sat_offset = self.sat_pool_.draw(b[sat_host], rng)

        pos = np.concatenate([halos.pos[has_cen], halos.pos[sat_host] + sat_offset])
        mstar = np.concatenate([cen_mstar, sat_mstar])
        return np.mod(pos, box), mstar

    def fitted_params(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "log_mass_edges": self.edges_.tolist(),
            "p_cen": self.p_cen_.tolist(),
            "sat_ratio": self.sat_ratio_.tolist(),
            "n_centrals": self.cen_pool_.count.tolist(),
            "n_satellites": self.sat_pool_.count.tolist(),
        }


class _Pool:
    """Training galaxies grouped by bin, to draw (M*, offset) pairs with replacement."""

    def __init__(
        self, bins: np.ndarray, mstar: np.ndarray, n_bins: int, offset: np.ndarray | None = None
    ):
        order = np.argsort(bins, kind="stable")
        self.mstar = np.asarray(mstar, dtype=np.float64)[order]
        self.offset = None if offset is None else offset[order]
        self.count = np.bincount(bins, minlength=n_bins)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])

    def draw(self, bins: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random member of each requested bin (bins must be non-empty)."""
        pick = self.start[bins] + np.floor(rng.random(len(bins)) * self.count[bins]).astype(int)
        offset = np.zeros((len(bins), 3)) if self.offset is None else self.offset[pick]
        return self.mstar[pick], offset
