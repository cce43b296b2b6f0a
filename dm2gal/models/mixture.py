"""A per-voxel distribution of stellar mass: occupancy times a mixture in log mass.

Space. The data transform stores the target as ``y_n = (log10(1 + M) - mean) / std`` with ``M``
in Msun/h per voxel (:class:`dm2gal.data.transforms.FieldTransform`). A voxel is empty
(``M = 0``) with probability ``1 - p``; an occupied voxel's ``y_n`` follows a mixture of ``K``
components with weights ``w_k``, locations ``mu_k`` and scales ``sigma_k``, all in normalised
units, of one family:

- ``normal``: Gaussians; in mass, component ``k`` is a shifted lognormal,
  ``log10(1 + M) ~ N(m_k, s_k^2)`` with ``m_k = std * mu_k + mean`` and ``s_k = std * sigma_k``
  (dex of ``1 + M``).
- ``gumbel``: minimum-Gumbel laws, ``log10(1 + M) = m_k + s_k ln E`` with ``E ~ Exp(1)``
  (density ``exp(z - e^z) / s_k`` at ``z = (y - m_k) / s_k``; mode ``m_k``, mean
  ``m_k - 0.5772 s_k``): a long tail to low mass and a short one to high mass. A voxel that
  holds a cloud-in-cell share of a galaxy has such a law (the share is at most the whole
  galaxy, often a small part of it); a Gaussian fitted to it in log mass puts as much
  probability above as below, and its mean in mass, dominated by that upper tail, comes out
  high.

Draws. ``M = clip(10^y - 1, 0, M_max)``: either law puts some probability below ``y = 0``
(``-1 < M < 0``, i.e. less than one solar mass, in a voxel said to hold a galaxy) and above
the largest mass the training region showed (``M_max``, the bound every prediction keeps); the
clip maps those to 0 and ``M_max``.

Mean. ``E[M] = p * sum_k w_k E_k`` is the exact expectation of the clipped draws, in closed
form with ``c = ln 10``, ``b = log10(1 + M_max)``. Normal, with ``Phi`` the standard normal CDF:

    E_k = exp(c m_k + c^2 s_k^2 / 2) [Phi((b - m_k - c s_k^2) / s_k) - Phi((-m_k - c s_k^2) / s_k)]
          - [Phi((b - m_k) / s_k) - Phi(-m_k / s_k)] + M_max Phi((m_k - b) / s_k)

(the first term is ``E[10^y; 0 < y < b]``, the second ``P(0 < y < b)``, the third the clipped
upper tail). Gumbel, with ``a = c s_k``, ``10^y = 10^m_k E^a``, ``Q`` the regularised upper
incomplete gamma function, ``e_0 = exp(-m_k / s_k)`` and ``e_1 = exp((b - m_k) / s_k)``:

    E_k = 10^m_k Gamma(1 + a) [Q(1 + a, e_0) - Q(1 + a, e_1)] - [exp(-e_0) - exp(-e_1)]
          + M_max exp(-e_1)

Both are evaluated in float64 and in log space where they could overflow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dm2gal.errors import ConfigError
from dm2gal.models.families import LN10, family_law

# smallest scale of a component (normalised units), so a density never collapses onto a voxel
SCALE_MIN = 1e-3
# uniform numbers per voxel that one draw uses (occupancy, component, log mass)
NOISE_CHANNELS = 3


def check_min_occupancy(value: float, key: str) -> float:
    """``value`` as a float when it is a probability floor in ``[0, 1)``, else a
    :class:`ConfigError` naming the config ``key``."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}: expected a probability in [0, 1), got {value!r}")
    return float(value)


class OccupancyMixture:
    """The distribution above for every voxel of a network output.

    Args:
        output: raw output ``(B, 1 + 3K, ...)``: occupancy logit, then ``K`` weight logits,
            ``K`` locations and ``K`` raw scales (``sigma = softplus(raw) + SCALE_MIN``).
        target_mean, target_std: the transform's ``mean`` and ``std`` of ``log10(1 + M)``.
        target_max: ``M_max`` (Msun/h per voxel); ``inf``: no upper clip.
        min_occupancy: occupancies below this count as 0 in :meth:`mean` and the draws (not in
            the likelihood): see :meth:`resolved_occupancy`.
        family: the components' law of log mass, one of ``normal``, ``gumbel``
            (:mod:`dm2gal.models.families`).
    """

    def __init__(
        self,
        output: Tensor,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        target_max: float = math.inf,
        min_occupancy: float = 0.0,
        family: str = "normal",
    ) -> None:
        channels = output.shape[1] if output.ndim >= 2 else 0
        if channels < 4 or (channels - 1) % 3:
            raise ValueError(
                "OccupancyMixture: expected output (B, 1 + 3K, ...) with K >= 1 components, got "
                f"{tuple(output.shape)}"
            )
        if not target_std > 0 or not target_max > 0:
            raise ValueError(
                f"OccupancyMixture: need target_std > 0 and target_max > 0, got {target_std}, "
                f"{target_max}"
            )
        out = output.float()
        self.logit = out[:, :1]
        weights, self.loc, scale = out[:, 1:].chunk(3, dim=1)
        self.log_weights = F.log_softmax(weights, dim=1)
        self.scale = F.softplus(scale) + SCALE_MIN
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.target_max = float(target_max)
        self.min_occupancy = check_min_occupancy(min_occupancy, "model.min_occupancy")
        self.law = family_law(family, "model.family")
        self.family = self.law.name

    @property
    def components(self) -> int:
        return self.loc.shape[1]

    def occupancy(self) -> Tensor:
        """``p``, the probability that a voxel holds stellar mass, ``(B, 1, ...)``."""
        return torch.sigmoid(self.logit)

    def resolved_occupancy(self) -> Tensor:
        """:meth:`occupancy`, set to 0 below ``min_occupancy`` (float64): what the mean and the
        draws use. Far from every halo the likelihood drives ``p`` towards 0 only slowly (its
        gradient there is ``p`` itself) while the mass an occupied voxel would hold stays at a
        galaxy's: millions of such voxels at ``p ~ 1e-4`` add a few percent of spurious
        stellar mass to the mean and spurious galaxies to the draws."""
        p = self.occupancy().double()
        return torch.where(p < self.min_occupancy, torch.zeros_like(p), p)

    def log_density(self, target: Tensor) -> Tensor:
        """Log density of the mixture at normalised targets ``(B, 1, ...)`` (per unit ``y_n``)."""
        z = (target.float() - self.loc) / self.scale
        terms = self.log_weights + self.law.log_density(z) - torch.log(self.scale)
        return torch.logsumexp(terms, dim=1, keepdim=True)

    def log_prob(self, target: Tensor, occupied: Tensor) -> Tensor:
        """Per-voxel log-likelihood ``(B, 1, ...)`` of normalised targets: ``log(1 - p)`` where
        empty, ``log p + log_density(target)`` where ``occupied`` (an empty voxel's target,
        whatever it holds, never reaches the density)."""
        target = torch.where(occupied, target.float(), self.loc[:, :1])
        full = F.logsigmoid(self.logit) + self.log_density(target)
        return torch.where(occupied, full, F.logsigmoid(-self.logit))

    def _log10_params(self) -> tuple[Tensor, Tensor]:
        """Location and scale (dex) of each component's ``log10(1 + M)``, float64."""
        loc = self.loc.double() * self.target_std + self.target_mean
        return loc, self.scale.double() * self.target_std

    def mean(self) -> Tensor:
        """``E[M]`` per voxel (Msun/h, float64), the expectation of :meth:`sample`'s draws.
        Evaluated only where the resolved occupancy is non-zero (elsewhere the mean is 0):
        most of a box is far from every halo, and the Gumbel means' incomplete gamma
        functions are slow."""
        p = self.resolved_occupancy()
        where = p[:, 0] > 0  # (B, ...)
        m, s = (x.movedim(1, -1)[where] for x in self._log10_params())  # (N, K)
        top = math.log10(1.0 + self.target_max) if math.isfinite(self.target_max) else math.inf
        b = torch.full_like(m, top)
        per_component = self.law.clipped_means(m, s, b, self.target_max)
        weights = self.log_weights.double().exp().movedim(1, -1)[where]
        mean = torch.zeros_like(p[:, 0])
        mean[where] = p[:, 0][where] * (weights * per_component).sum(dim=-1)
        return mean.unsqueeze(1)

    def sample(self, generator: torch.Generator) -> Tensor:
        """One draw of ``M`` per voxel (Msun/h, float64), from ``generator`` (on the output's
        device): the same generator state gives the same draw."""
        shape = (self.logit.shape[0], NOISE_CHANNELS, *self.logit.shape[2:])
        noise = torch.rand(
            shape, generator=generator, device=self.logit.device, dtype=torch.float64
        )
        return self.from_noise(noise)

    def from_noise(self, noise: Tensor) -> Tensor:
        """The draw of ``M`` per voxel (Msun/h, float64) that uniform noise ``(B, 3, ...)`` in
        ``(0, 1)`` selects: channel 0 decides occupancy (``u < p``), channel 1 the component
        (inverse CDF of the weights), channel 2 the log mass (the component's quantile).
        Noise fields fixed per voxel make draws independent of how a volume is tiled."""
        if noise.shape[1] != NOISE_CHANNELS or noise.shape[2:] != self.logit.shape[2:]:
            raise ValueError(
                f"OccupancyMixture: noise must have shape (B, {NOISE_CHANNELS}, "
                f"{', '.join(map(str, self.logit.shape[2:]))}), got {tuple(noise.shape)}"
            )
        u_occupied, u_component, u_mass = noise.double().split(1, dim=1)
        occupied = u_occupied < self.resolved_occupancy()
        cumulative = self.log_weights.double().exp().cumsum(dim=1)
        k = (u_component > cumulative).sum(dim=1, keepdim=True).clamp(max=self.components - 1)
        m, s = self._log10_params()
        y = m.gather(1, k) + s.gather(1, k) * self.law.quantile(u_mass)
        mass = torch.expm1(LN10 * y).clamp(min=0.0, max=self.target_max)
        return torch.where(occupied, mass, torch.zeros_like(mass))
