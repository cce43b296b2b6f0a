"""The paper's empirical binned HOD, and its environment-aware version, fitted on the training
region only.

Hosts are binned in log10 mass: the gravity-only mass for the hosts to populate, the galaxies'
own ``host_mass`` for the hydro/mock galaxies, one mass definition on both sides (the
catalogues record it). Per bin, fitted on training data only:

* centrals: every host gets a central with probability ``p_cen`` = (training centrals in the
  cell) / (training gravity-only hosts in the cell), capped at 1; its stellar mass is drawn from
  the training centrals of the cell; it sits at the host centre. A cell is the mass bin, or with
  ``env_bins`` > 1 the mass bin times the quantile of the environment (``log10(1 + delta)`` of
  the gravity-only DM smoothed on R Mpc/h, :mod:`dm2gal.hod.environment`) among the bin's
  training hosts: a central in a denser neighbourhood than its bin's typical host draws from
  the centrals of such neighbourhoods. R among ``env_radii`` and the number of quantiles
  among ``env_bins`` are chosen by the held-out likelihood of the training centrals in
  ``env_folds`` x-slabs of the training region (fitted on the other slabs): occupation
  (Bernoulli per host) and log10 M* (normal per cell).
* satellites: the expected count of a host is its satellite subhalos ``n_sub - 1`` times the
  bin's ratio (training satellites) / (satellite subhalos of the training gravity-only hosts),
  the paper's subhalo-count scaling applied to the count instead of the mass; the count is the
  expectation's floor plus a Bernoulli draw of its fraction (exactly ``n_sub - 1`` when the
  ratio is 1, as in the paper). Each satellite draws one training satellite of the bin and takes
  its stellar mass and its offset from its host's central galaxy (periodic minimum image), so
  mass and radius stay correlated; training satellites whose central is not a training galaxy
  are left out (their offset is unknown without a held-out position).

The mean field puts each host's expected central mass (``p_cen`` x the cell's mean M*) at its
centre and spreads its expected satellite mass over the bin's training satellites (their
offsets and masses; an evenly spaced subset of ``mean_offsets`` of them in a larger bin, whose
masses are rescaled to the bin's mean): its total is the draws' expected total exactly.

Unlike the paper: no held-out galaxy is ever used, draws are seeded, hosts without a central
galaxy are flagged correctly (the paper marked subhalo -1 as a central), and hosts outside the
bin range are put in the end bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dm2gal.errors import ConfigError, integer_option
from dm2gal.hod.base import HOD, IsHeldout, training_galaxies
from dm2gal.hod.environment import Environment
from dm2gal.io.catalog import GalaxyCatalog, HaloCatalog

#: floor of a cell's log10 M* spread in the radius likelihood (dex): a cell of identical masses
#: must not score an infinite density
MIN_LOG_SCATTER = 0.02
#: probability floor of the occupation likelihood
MIN_PROBABILITY = 1e-6


class BinnedHOD(HOD):
    """Empirical HOD on ``n_bins`` equal log10-mass bins (or explicit ``log_mass_edges``).

    Args:
        n_bins: number of bins spanning the training hosts' and galaxies' log10 mass range.
        log_mass_edges: explicit increasing bin edges in log10(M / (Msun/h)); overrides n_bins.
        name: benchmark name (the fields are ``hod_<name>_mean`` and ``hod_<name>_draw``).
        env_bins: environment quantiles per mass bin for the centrals (1: halo mass only), or
            candidate numbers of quantiles to choose from.
        env_radii: candidate smoothing radii of the environment, Mpc/h (one: no choice).
        env_folds: x-slabs of the training region for choosing the radius and quantiles.
        mean_offsets: training satellites per bin that spread the mean field's satellites.
    """

    def __init__(
        self,
        n_bins: int = 10,
        log_mass_edges: list[float] | None = None,
        name: str = "binned",
        env_bins: int | Sequence[int] = 1,
        env_radii: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
        env_folds: int = 4,
        mean_offsets: int = 64,
    ):
        if log_mass_edges is not None:
            edges = np.asarray(log_mass_edges, dtype=np.float64)
            if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
                raise ConfigError(
                    f"hod.log_mass_edges must be >= 2 increasing values, got {log_mass_edges}"
                )
        choices = [env_bins] if np.ndim(env_bins) == 0 else list(env_bins)
        n_bins = integer_option(n_bins, "hod.n_bins", 1)
        choices = [integer_option(b, "hod.env_bins", 1) for b in choices or [None]]
        env_folds = integer_option(env_folds, "hod.env_folds", 2)
        mean_offsets = integer_option(mean_offsets, "hod.mean_offsets", 1)
        radii = [float(r) for r in env_radii]
        if not radii or min(radii) <= 0:
            raise ConfigError(f"hod.env_radii must be radii > 0 Mpc/h, got {env_radii!r}")
        self.n_bins = n_bins if log_mass_edges is None else len(log_mass_edges) - 1
        self.log_mass_edges = log_mass_edges
        self.name = name
        self.env_bin_choices, self.env_radii = sorted(set(choices)), radii
        self.env_bins = self.env_bin_choices[-1]
        self.env_folds, self.mean_offsets = env_folds, mean_offsets
        self.needs_environment = self.env_bins > 1
        self.fitted = False

    def _bin(self, mass: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.edges_, np.log10(mass), side="right") - 1
        return np.clip(idx, 0, self.n_bins - 1)

    # -- fit --------------------------------------------------------------------------------------
    def fit(
        self,
        halos: HaloCatalog,
        galaxies: GalaxyCatalog,
        is_heldout: IsHeldout,
        box: float,
        env: Environment | None = None,
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
        c_bin = self._bin(host_mass[cen])
        h_env = c_env = None
        self.env_radius_, self.env_scores_ = None, {}
        if self.needs_environment:
            env = self._require_environment(env)
            h_pos, c_pos = halos.pos[h_tr], galaxies.pos[cen]
            mstar = np.asarray(galaxies.mstar, dtype=np.float64)[cen]
            self.env_radius_, self.env_bins = self._choose_environment(
                env, h_bin, h_pos, c_bin, c_pos, mstar, box
            )
            h_env = env.at(h_pos, self.env_radius_)
            c_env = env.at(c_pos, self.env_radius_)
        self.env_edges_ = self._env_edges(h_bin, h_env)
        h_cell = self._cell(h_bin, h_env)
        n_cells = self.n_bins * self.env_bins
        n_host = np.bincount(h_cell, minlength=n_cells)
        sites = np.bincount(h_bin, weights=halos.n_sub[h_tr] - 1.0, minlength=self.n_bins)
        self.cen_pool_ = _Pool(self._cell(c_bin, c_env), galaxies.mstar[cen], n_cells)
        self.sat_pool_ = _Pool(self._bin(host_mass[sat]), galaxies.mstar[sat], self.n_bins, offset)
        n_cen, n_sat = self.cen_pool_.count, self.sat_pool_.count
        with np.errstate(divide="ignore", invalid="ignore"):
            self.p_cen_ = np.where(n_host > 0, np.minimum(n_cen / n_host, 1.0), n_cen > 0)
            self.sat_ratio_ = np.where(sites > 0, n_sat / sites, 0.0)
        self.fitted = True
        return self

    def _env_edges(
        self, h_bin: np.ndarray, h_env: np.ndarray | None, quantiles: int | None = None
    ) -> np.ndarray:
        """Per mass bin, the inner edges of ``quantiles`` (default :attr:`env_bins`) quantiles
        of the training hosts' environment."""
        quantiles = quantiles or self.env_bins
        edges = np.zeros((self.n_bins, quantiles - 1))
        if h_env is None:
            return edges
        q = np.arange(1, quantiles) / quantiles
        everywhere = np.quantile(h_env, q)
        for b in range(self.n_bins):
            in_bin = h_env[h_bin == b]
            edges[b] = np.quantile(in_bin, q) if len(in_bin) else everywhere
        return edges

    def _cell(self, bins: np.ndarray, env: np.ndarray | None, edges: Any = None) -> np.ndarray:
        """Cell index ``bin * quantiles + environment quantile`` (the bin without environment),
        the quantiles those of ``edges`` (default: the fitted ones)."""
        if env is None:
            return bins
        edges = self.env_edges_ if edges is None else edges
        quantile = np.zeros(len(bins), dtype=np.int64)
        for b in np.unique(bins):
            sel = bins == b
            quantile[sel] = np.searchsorted(edges[b], env[sel], side="right")
        return bins * (edges.shape[1] + 1) + quantile

    def _choose_environment(
        self,
        env: Environment,
        h_bin: np.ndarray,
        h_pos: np.ndarray,
        c_bin: np.ndarray,
        c_pos: np.ndarray,
        mstar: np.ndarray,
        box: float,
    ) -> tuple[float, int]:
        """The radius of :attr:`env_radii` and the number of quantiles of
        :attr:`env_bin_choices` whose cells best predict held-out x-slabs of the training
        region (summed log-likelihood of occupation and central log10 M*)."""
        candidates = [(r, q) for r in self.env_radii for q in self.env_bin_choices]
        if len(candidates) == 1:
            return candidates[0]
        h_fold = np.floor(self.env_folds * np.mod(h_pos[:, 0], box) / box).astype(int)
        c_fold = np.floor(self.env_folds * np.mod(c_pos[:, 0], box) / box).astype(int)
        log_mstar = np.log10(mstar)
        for radius in self.env_radii:
            h_env, c_env = env.at(h_pos, radius), env.at(c_pos, radius)
            for quantiles in self.env_bin_choices:
                score = 0.0
                for fold in range(self.env_folds):
                    fit_h, fit_c = h_fold != fold, c_fold != fold
                    edges = self._env_edges(h_bin[fit_h], h_env[fit_h], quantiles)
                    h_cell = self._cell(h_bin, h_env, edges)
                    c_cell = self._cell(c_bin, c_env, edges)
                    score += _cell_loglike(
                        h_cell[fit_h], c_cell[fit_c], log_mstar[fit_c],
                        h_cell[~fit_h], c_cell[~fit_c], log_mstar[~fit_c],
                        self.n_bins * quantiles,
                    )  # fmt: skip
                self.env_scores_[radius, quantiles] = score
        return max(self.env_scores_, key=self.env_scores_.get)

    # -- draws and means -------------------------------------------------------------------------
    def _host_cells(self, halos: HaloCatalog, env: Environment | None) -> tuple[np.ndarray, ...]:
        self._require_fitted()
        b = self._bin(np.asarray(halos.mass, dtype=np.float64))
        h_env = None
        if self.needs_environment:
            h_env = self._require_environment(env).at(halos.pos, self.env_radius_)
        expect = (np.asarray(halos.n_sub, dtype=np.float64) - 1.0) * self.sat_ratio_[b]
        return b, self._cell(b, h_env), expect

    def sample(
        self, halos: HaloCatalog, seed: int, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Populate every host; return positions (Mpc/h, in ``[0, box)``) and M* (Msun/h)."""
        b, cell, expect = self._host_cells(halos, env)
        rng = np.random.default_rng(seed)
        has_cen = rng.random(len(b)) < self.p_cen_[cell]
        cen_mstar, _ = self.cen_pool_.draw(cell[has_cen], rng)

        n_sat = np.floor(expect).astype(np.int64)
        n_sat += rng.random(len(b)) < expect - n_sat
        sat_host = np.repeat(np.arange(len(b)), n_sat)
        sat_mstar, sat_offset = self.sat_pool_.draw(b[sat_host], rng)

        pos = np.concatenate([halos.pos[has_cen], halos.pos[sat_host] + sat_offset])
        mstar = np.concatenate([cen_mstar, sat_mstar])
        return np.mod(pos, box), mstar

    def mean(
        self, halos: HaloCatalog, box: float, env: Environment | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every host's expected central M* at its centre and its expected satellite M* spread
        over the bin's training satellites (see the module docstring)."""
        b, cell, expect = self._host_cells(halos, env)
        pos = [np.asarray(halos.pos, dtype=np.float64)]
        mstar = [self.p_cen_[cell] * self.cen_pool_.mean()[cell]]
        for bin_ in np.unique(b[expect > 0]):
            hosts = np.flatnonzero((b == bin_) & (expect > 0))
            sat_mstar, offset = self.sat_pool_.spread(bin_, self.mean_offsets)
            pos.append((halos.pos[hosts][:, None, :] + offset[None]).reshape(-1, 3))
            mstar.append((expect[hosts][:, None] * sat_mstar[None]).ravel())
        return np.mod(np.concatenate(pos), box), np.concatenate(mstar)

    def fitted_params(self) -> dict[str, Any]:
        self._require_fitted()
        params = {
            "log_mass_edges": self.edges_.tolist(),
            "p_cen": self.p_cen_.tolist(),
            "sat_ratio": self.sat_ratio_.tolist(),
            "n_centrals": self.cen_pool_.count.tolist(),
            "n_satellites": self.sat_pool_.count.tolist(),
        }
        if self.needs_environment:
            params |= {
                "env_radius": self.env_radius_,
                "env_bins": self.env_bins,
                "env_loglike": {f"R={r:g} bins={q}": s for (r, q), s in self.env_scores_.items()},
                "env_edges": self.env_edges_.tolist(),
            }
        return params


def _cell_loglike(
    fit_hosts: np.ndarray,
    fit_cells: np.ndarray,
    fit_log_mstar: np.ndarray,
    test_hosts: np.ndarray,
    test_cells: np.ndarray,
    test_log_mstar: np.ndarray,
    n_cells: int,
) -> float:
    """Log-likelihood of held-out hosts' central occupation (Bernoulli per host, the cell's
    fitted fraction) and of their centrals' log10 M* (normal, the cell's fitted mean and
    spread; a cell with fewer than 2 fitted centrals takes the whole sample's)."""
    n_host = np.bincount(fit_hosts, minlength=n_cells)
    n_cen = np.bincount(fit_cells, minlength=n_cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.clip(n_cen / n_host, MIN_PROBABILITY, 1.0 - MIN_PROBABILITY)
    p = np.where(n_host > 0, p, np.clip(len(fit_cells) / len(fit_hosts), MIN_PROBABILITY, 1.0))
    p = np.minimum(p, 1.0 - MIN_PROBABILITY)
    t_host = np.bincount(test_hosts, minlength=n_cells)
    t_cen = np.minimum(np.bincount(test_cells, minlength=n_cells), t_host)
    occupation = np.sum(t_cen * np.log(p) + (t_host - t_cen) * np.log1p(-p))

    s1 = np.bincount(fit_cells, weights=fit_log_mstar, minlength=n_cells)
    s2 = np.bincount(fit_cells, weights=fit_log_mstar**2, minlength=n_cells)
    enough = n_cen >= 2
    mu = np.where(enough, s1 / np.maximum(n_cen, 1), fit_log_mstar.mean())
    var = np.where(enough, s2 / np.maximum(n_cen, 1) - mu**2, fit_log_mstar.var())
    sigma = np.sqrt(np.maximum(var, MIN_LOG_SCATTER**2))
    z = (test_log_mstar - mu[test_cells]) / sigma[test_cells]
    masses = np.sum(-0.5 * z**2 - np.log(sigma[test_cells] * np.sqrt(2.0 * np.pi)))
    return float(occupation + masses)


class _Pool:
    """Training galaxies grouped by bin, to draw (M*, offset) pairs with replacement."""

    def __init__(
        self, bins: np.ndarray, mstar: np.ndarray, n_bins: int, offset: np.ndarray | None = None
    ):
        order = np.argsort(bins, kind="stable")
        self.bins = np.asarray(bins)[order]
        self.mstar = np.asarray(mstar, dtype=np.float64)[order]
        self.offset = np.zeros((len(order), 3)) if offset is None else offset[order]
        self.count = np.bincount(bins, minlength=n_bins)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])

    def draw(self, bins: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random member of each requested bin (bins must be non-empty)."""
        pick = self.start[bins] + np.floor(rng.random(len(bins)) * self.count[bins]).astype(int)
        return self.mstar[pick], self.offset[pick]

    def mean(self) -> np.ndarray:
        """Each bin's mean M* (0 for an empty bin)."""
        total = np.bincount(self.bins, weights=self.mstar, minlength=len(self.count))
        return total / np.maximum(self.count, 1)

    def spread(self, bin_: int, at_most: int) -> tuple[np.ndarray, np.ndarray]:
        """A bin's members as weights summing to its mean M*: ``(weights, offsets)`` of all its
        members, or of ``at_most`` evenly spaced ones in a larger bin (their masses rescaled
        so the total stays the bin's mean)."""
        count = int(self.count[bin_])
        n = min(count, at_most)
        pick = self.start[bin_] + np.floor((np.arange(n) + 0.5) * count / n).astype(int)
        weights = self.mstar[pick] * (self.mean()[bin_] / self.mstar[pick].sum())
        return weights, self.offset[pick]
