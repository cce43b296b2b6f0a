"""Probabilistic network: per voxel, the distribution of stellar mass given the inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dm2gal.errors import ConfigError, integer_option
from dm2gal.models.families import LN10, family_law
from dm2gal.models.mass_law import mass_quantile
from dm2gal.models.mixture import SCALE_MIN, OccupancyMixture, check_min_occupancy
from dm2gal.models.occupancy import OccupancyNet


class ProbabilisticNet(OccupancyNet):
    """An :class:`OccupancyNet` whose ``3 * components`` value channels parametrise a mixture
    (normal or minimum-Gumbel components) of an occupied voxel's normalised target: the
    :class:`OccupancyMixture` that :meth:`distribution` builds and
    :class:`dm2gal.train.losses.OccupancyNLL` trains by likelihood.
    Output channels: occupancy logit, ``K`` weight logits, ``K`` locations, ``K`` raw scales.

    ``infer`` (what prediction, the validation callback and the evaluation call) returns the
    normalised *mean* ``E[M]``, and :meth:`infer_draws` the mean and random draws, all such that the
    data transform's inverse gives them in Msun/h per voxel. Both need the target transform
    (:meth:`set_target_transform`, which the Lightning module calls at set-up); it is kept in
    a buffer, so a checkpoint carries it, as it carries the head's offsets (:meth:`initialise`).

    Args:
        components: components in the mixture (``K >= 1``).
        family: their law of log mass, ``normal`` or ``gumbel`` (:mod:`dm2gal.models.mixture`).
        min_occupancy: occupancies below it count as 0 in the mean and the draws
            (:meth:`OccupancyMixture.resolved_occupancy`); the likelihood uses them as they are.
        others: as :class:`dm2gal.models.UNet3d` (``conditioning``, ``parameters``: FiLM of
            the UNet trunk); ``out_channels`` must be 1.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: int = 16,
        levels: int = 2,
        convs: int = 2,
        components: int = 2,
        min_occupancy: float = 0.0,
        family: str = "normal",
        conditioning: str = "none",
        parameters: Sequence[str] | None = None,
    ) -> None:
        components = integer_option(components, "model.components", 1)
        super().__init__(
            in_channels,
            out_channels,
            3 * int(components),
            channels,
            levels,
            convs,
            conditioning,
            parameters,
        )
        self.components = int(components)
        # checked here too, so that a bad config fails when the network is built
        self.min_occupancy = check_min_occupancy(min_occupancy, "model.min_occupancy")
        self.law = family_law(family, "model.family")
        self.family = self.law.name
        # mean and std of log10(1 + M), largest mass per voxel (Msun/h): the target transform
        scale = torch.tensor([0.0, 1.0, math.inf], dtype=torch.float64)
        self.register_buffer("target_scale", scale)
        # added to the occupancy logit, the locations and the raw scales (see initialise)
        self.register_buffer("offset", torch.zeros(3))
        self.register_buffer("initialised", torch.tensor(False))

    def set_target_transform(self, transform: Any) -> None:
        """Take the target's ``log10(1 + M)`` mean and std and its ``target_max`` from a
        :class:`dm2gal.data.transforms.FieldTransform`; the distribution lives in log mass."""
        if not transform.log:
            raise ConfigError(
                "ProbabilisticNet: the data transform must take log10(1 + M) of the target "
                "(data config log: true); its mixture is over log stellar mass"
            )
        top = math.inf if transform.target_max is None else transform.target_max
        self.target_scale.copy_(
            torch.tensor([transform.target_mean, transform.target_std, top], dtype=torch.float64)
        )

    def initialise(self, batch: dict[str, torch.Tensor]) -> None:
        """Start the head at a training batch's statistics, once (later calls do nothing): the
        occupancy logit at the log-odds of its occupied fraction, every component at the mean
        and standard deviation of its occupied voxels' normalised targets (a Gumbel component's
        location and scale set to give them). Occupied voxels sit
        several standard deviations of the whole-field normalisation above the empty ones,
        further than a freshly initialised head travels in thousands of steps."""
        if bool(self.initialised):
            return
        occupied = batch["occupied"]
        valid = batch.get("valid", torch.ones_like(occupied))
        values = batch["target"][occupied & valid].double()
        if values.numel() < 2:
            return
        fraction = values.numel() / int(valid.sum())
        loc, scale = self.law.from_moments(float(values.mean()), float(values.std()))
        scale = max(scale - SCALE_MIN, SCALE_MIN)
        raw_scale = scale + math.log(-math.expm1(-scale))  # inverse of softplus
        logit = math.log(fraction) - math.log1p(-fraction) if fraction < 1 else 0.0
        self.offset.copy_(torch.tensor([logit, loc, raw_scale]))
        self.initialised.fill_(True)

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        k = self.components
        logit, loc, scale = self.offset.to(x.dtype).split(1)
        shift = torch.cat([logit, loc.new_zeros(k), loc.expand(k), scale.expand(k)])
        return super().forward(x, params) + shift.view(1, -1, 1, 1, 1)

    def distribution(self, output: torch.Tensor) -> OccupancyMixture:
        """The per-voxel distribution described by a raw output of :meth:`forward`."""
        mean, std, top = self.target_scale.tolist()
        return OccupancyMixture(output, mean, std, top, self.min_occupancy, self.family)

    def _normalised(self, mass: torch.Tensor) -> torch.Tensor:
        mean, std, _ = self.target_scale.tolist()
        return ((torch.log1p(mass) / LN10 - mean) / std).float()

    def infer(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised ``log10(1 + E[M])``: the mean field, exact after the inverse
        transform."""
        return self._normalised(self.distribution(self(x, params)).mean())

    def infer_draws(
        self, x: torch.Tensor, noise: torch.Tensor, params: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The normalised mean and K draws ``(B, 1 + K, n, n, n)`` from one forward pass; draw
        ``i`` is the one that ``noise[:, i]`` selects: ``noise`` ``(B, K, 3, n, n, n)``, uniforms
        independent per voxel (:meth:`OccupancyMixture.from_noise`), or ``(B, K, 1, n, n, n)``,
        a copula's correlated uniforms, each voxel's mass their quantile
        (:func:`dm2gal.models.mass_law.mass_quantile`). Noise fixed per voxel
        (:func:`dm2gal.infer.predict.draw_noise`) makes a draw independent of tiling; ``params``:
        a conditioned network's universe parameters ``(B, P)``."""
        dist = self.distribution(self(x, params))
        draws = [
            mass_quantile(dist, noise[:, i])
            if noise.shape[2] == 1
            else dist.from_noise(noise[:, i])
            for i in range(noise.shape[1])
        ]
        return self._normalised(torch.cat([dist.mean(), *draws], dim=1))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, components={self.components}, "
            f"min_occupancy={self.min_occupancy}, family={self.family}"
        )
