"""Samplers over training anchors: uniform, or mass-bin weighted; both distributed-aware.

Each rank draws its own share of ``samples_per_epoch`` from a generator seeded by
``(seed, epoch, rank)``: ranks differ, and an epoch repeats given the seed. Lightning calls
``set_epoch`` at the start of every epoch (set ``use_distributed_sampler=False`` in the trainer so
it does not wrap these samplers).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from dm2gal.errors import ConfigError, integer_option


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if dist else 1
    if rank is None:
        rank = torch.distributed.get_rank() if dist else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"sampler: rank {rank} outside 0..num_replicas-1 = {num_replicas - 1}")
    return num_replicas, rank


class UniformSampler(Sampler[int]):
    """Training anchors drawn uniformly.

    Args:
        num_anchors: number of training anchors (indices ``0..num_anchors-1``).
        stat: unused (the mass-bin sampler's argument; accepted so both share a signature).
        samples_per_epoch: draws per epoch over all ranks, with replacement; None: one random
            permutation of all anchors per epoch, split across ranks.
        seed, num_replicas, rank: see the module docstring (defaults from torch.distributed).
    """

    needs_stat = False

    def __init__(
        self,
        num_anchors: int,
        stat: np.ndarray | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if num_anchors < 1:
            raise ConfigError(f"sampler: no training anchors to draw from (got {num_anchors})")
        if samples_per_epoch is not None:
            samples_per_epoch = integer_option(samples_per_epoch, "sampler.samples_per_epoch", 1)
        self.num_anchors, self.seed, self.epoch = int(num_anchors), int(seed), 0
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.total = int(samples_per_epoch or num_anchors)
        self.num_samples = math.ceil(self.total / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def weights(self, indices: np.ndarray) -> np.ndarray | None:
        """Importance weight of each drawn anchor (uniform probability over the sampler's), or
        None when draws need no weighting."""
        return None

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, self.rank])

    def draw(self) -> np.ndarray:
        """This rank's anchor indices for the current epoch."""
        if self.total == self.num_anchors and self.total >= self.num_replicas:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_anchors)
            return np.resize(perm, self.num_samples * self.num_replicas)[
                self.rank :: self.num_replicas
            ]
        return self._rng().integers(0, self.num_anchors, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw().tolist())


class MassBinSampler(UniformSampler):
    """Anchors drawn with replacement, inverse-frequency weighted in bins of a target statistic.

    The statistic (``log10(1 + M*)`` of the central voxel for 1^3 targets, of the crop's total
    otherwise, computed by the data module over all training anchors) is cut into ``bins``
    equal-width bins; each non-empty bin is drawn with equal probability, then an anchor within
    it uniformly, so the sampled statistic is flat across bins.

    Args:
        num_anchors: number of training anchors.
        stat: the statistic per anchor, shape ``(num_anchors,)``.
        bins: number of bins (20 by default; the paper used 100).
        importance: give each draw the weight ``P_uniform / P_drawn`` (:meth:`weights`, carried
            into the batch as ``weight``): a loss that uses it averages over the training region
            as uniform draws would, while seeing the rare high-mass crops more often (a
            likelihood stays unbiased). False: the draws are meant to reweight the loss.
        samples_per_epoch, seed, num_replicas, rank: as :class:`UniformSampler`.
    """

    needs_stat = True

    def __init__(
        self,
        num_anchors: int,
        stat: np.ndarray | None = None,
        bins: int = 20,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        importance: bool = False,
    ):
        super().__init__(num_anchors, None, samples_per_epoch, seed, num_replicas, rank)
        if not isinstance(importance, bool):
            raise ConfigError(f"sampler.importance: expected true or false, got {importance!r}")
        self.importance = importance
        integer_option(bins, "sampler.bins", 1)
        if stat is None or np.shape(stat) != (num_anchors,):
            raise ConfigError(
                f"sampler: stat must have shape ({num_anchors},), got {np.shape(stat)}"
            )
        self.bins = int(bins)
        binned = self.bin_of(np.asarray(stat), self.bins)
        self.order = np.argsort(binned, kind="stable").astype(np.min_scalar_type(num_anchors))
        counts = np.bincount(binned, minlength=self.bins)
        self.nonempty = np.flatnonzero(counts)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        # P_uniform / P_drawn = (1 / N) / (1 / (nonempty bins * anchors in the bin))
        self.bin_weight = counts * (len(self.nonempty) / num_anchors)
        self.binned = binned

    @staticmethod
    def bin_of(stat: np.ndarray, bins: int) -> np.ndarray:
        """Equal-width bin index (0..bins-1) of each value between the min and max of ``stat``."""
        lo, hi = float(stat.min()), float(stat.max())
        if hi <= lo:
            return np.zeros(len(stat), dtype=np.int32)
        idx = ((stat - lo) * (bins / (hi - lo))).astype(np.int32)
        return np.minimum(idx, bins - 1, out=idx)

    def weights(self, indices: np.ndarray) -> np.ndarray | None:
        return self.bin_weight[self.binned[indices]] if self.importance else None

    def draw(self) -> np.ndarray:
        rng = self._rng()
        b = self.nonempty[rng.integers(0, len(self.nonempty), self.num_samples)]
        lo, count = self.offsets[b], self.offsets[b + 1] - self.offsets[b]
        return self.order[lo + (rng.random(self.num_samples) * count).astype(np.int64)].astype(
            np.int64
        )


class AugmentationSeeds(Sampler[tuple]):
    """Pairs each index a sampler draws with a seed for that crop's augmentation (and its
    importance weight, when the sampler gives one: ``(index, seed, weight)``).

    The seeds come from ``(seed, epoch, rank)`` like the draws, so an epoch augments the same
    crops the same way whatever the number of loader workers, and a run resumed from a
    checkpoint continues exactly as an uninterrupted one.
    """

    def __init__(self, sampler: UniformSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple]:
        s = self.sampler
        seeds = np.random.default_rng([s.seed, s.epoch, s.rank, 1]).integers(0, 2**62, len(s))
        indices = s.draw()
        weights = s.weights(indices)
        if weights is None:
            return zip(indices.tolist(), seeds.tolist(), strict=True)
        return zip(indices.tolist(), seeds.tolist(), weights.tolist(), strict=True)
