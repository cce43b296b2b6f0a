"""Training losses on the normalised target.

Each loss is an ``nn.Module`` with a ``name`` (used in log keys) whose ``forward(output, batch)``
returns a scalar. ``output`` is the network's raw output ``(B, C, n, n, n)``; ``batch["target"]``
is the normalised target ``(B, 1, n, n, n)`` and ``batch["occupied"]`` a bool tensor of the same
shape that is True where the raw target is > 0. When ``batch["valid"]`` is present (validation
and test tiles reaching past their region, or the paper's M* threshold), only those voxels count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dm2gal.models.families import check_family
from dm2gal.models.mixture import OccupancyMixture


def _single_channel(name: str, output: Tensor, target: Tensor) -> None:
    if output.shape != target.shape:
        raise ValueError(
            f"loss {name!r}: output shape {tuple(output.shape)} != target shape "
            f"{tuple(target.shape)}"
        )


def _valid(batch: dict[str, Tensor], like: Tensor) -> Tensor:
    """The voxels that count, as a float mask shaped like the target."""
    valid = batch.get("valid")
    return torch.ones_like(like) if valid is None else valid.to(like.dtype)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the voxels where ``mask`` is 1 (0 when there are none)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


class MSELoss(nn.Module):
    """Mean squared error over the valid voxels."""

    name = "mse"

    def forward(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        target = batch["target"]
        _single_channel(self.name, output, target)
        return _masked_mean((output.float() - target.float()) ** 2, _valid(batch, target.float()))


class HuberLoss(nn.Module):
    """Huber loss over all voxels: quadratic for errors below ``delta`` (normalised units),
    linear above."""

    name = "huber"

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        if delta <= 0:
            raise ValueError(f"HuberLoss: delta must be > 0, got {delta}")
        self.delta = float(delta)

    def forward(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        target = batch["target"].float()
        _single_channel(self.name, output, target)
        loss = F.huber_loss(output.float(), target, delta=self.delta, reduction="none")
        return _masked_mean(loss, _valid(batch, target))


class WeightedMSELoss(nn.Module):
    """Squared error weighted by the inverse frequency of the voxel's target bin in the batch.

    The target range is cut into ``bins`` equal-width bins; their edges span ``[low, high]``
    (normalised units) when both are given and the batch's own ``[min, max]`` otherwise; values
    outside fall in the end bins. A voxel in bin ``b`` holding ``N_b`` of the batch's ``N``
    voxels gets weight ``N / (K * N_b)``, with ``K`` the number of non-empty bins, so the loss is
    the mean over non-empty bins of each bin's MSE: rare massive voxels count as much as the
    many empty ones.
    """

    name = "weighted_mse"

    def __init__(self, bins: int = 10, low: float | None = None, high: float | None = None) -> None:
        super().__init__()
        if bins < 1:
            raise ValueError(f"WeightedMSELoss: bins must be >= 1, got {bins}")
        if (low is None) != (high is None) or (low is not None and not low < high):
            raise ValueError(
                f"WeightedMSELoss: give both low < high or neither, got low={low}, high={high}"
            )
        self.bins, self.low, self.high = bins, low, high

    def bin_index(self, target: Tensor) -> Tensor:
        """Bin of each voxel (int64, same shape as ``target``)."""
        t = target.detach().float()
        low = t.min() if self.low is None else t.new_tensor(self.low)
        high = t.max() if self.high is None else t.new_tensor(self.high)
        width = torch.clamp((high - low) / self.bins, min=torch.finfo(torch.float32).tiny)
        return ((t - low) / width).floor().clamp(0, self.bins - 1).long()

    def forward(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        target = batch["target"]
        _single_channel(self.name, output, target)
        keep = _valid(batch, target.float()).flatten() > 0
        target, output = target.flatten()[keep], output.flatten()[keep]
        if target.numel() == 0:
            return output.sum() * 0.0
        index = self.bin_index(target)
        counts = torch.bincount(index, minlength=self.bins).float()
        weights = index.numel() / (torch.count_nonzero(counts) * counts[index])
        return (weights * (output.float() - target.float()) ** 2).mean()


class TwoPhaseLoss(nn.Module):
    """Two-phase loss for :class:`dm2gal.models.TwoPhaseNet` output ``(B, 2, n, n, n)``:
    ``bce_weight * BCE + mse_weight * MSE``.

    BCE is the binary cross-entropy of channel 0 (occupancy logit) against ``batch["occupied"]``,
    averaged over the valid voxels, with occupied voxels weighted by ``pos_weight`` (when None, the
    batch's ratio of empty to occupied voxels, which balances the two classes). MSE is the mean
    squared error of channel 1 against the normalised target over occupied voxels only (0 when
    the batch has none).
    """

    name = "twophase"

    def __init__(
        self, bce_weight: float = 1.0, mse_weight: float = 1.0, pos_weight: float | None = None
    ) -> None:
        super().__init__()
        if bce_weight < 0 or mse_weight < 0 or (pos_weight is not None and pos_weight <= 0):
            raise ValueError(
                "TwoPhaseLoss: need bce_weight >= 0, mse_weight >= 0, pos_weight > 0 or None; "
                f"got {bce_weight}, {mse_weight}, {pos_weight}"
            )
        self.bce_weight, self.mse_weight, self.pos_weight = bce_weight, mse_weight, pos_weight

    def components(self, output: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The unweighted terms ``{"bce": ..., "mse": ...}`` (for logging)."""
        target, occupied = batch["target"], batch["occupied"]
        if output.shape[1] != 2 or output.shape[2:] != target.shape[2:]:
            raise ValueError(
                f"loss 'twophase': expected output (B, 2, n, n, n) matching target "
                f"{tuple(target.shape)}, got {tuple(output.shape)}"
            )
        logit, value = output.float().split(1, dim=1)
        valid = _valid(batch, logit)
        occ = occupied.to(logit.dtype) * valid
        n_occ = occ.sum()
        if self.pos_weight is None:
            pos_weight = (valid.sum() - n_occ) / n_occ.clamp(min=1)
        else:
            pos_weight = torch.tensor(self.pos_weight, dtype=logit.dtype, device=logit.device)
        bce = F.binary_cross_entropy_with_logits(
            logit, occ, pos_weight=pos_weight, reduction="none"
        )
        bce = _masked_mean(bce, valid)
        mse = _masked_mean((value - target) ** 2, occ)
        return {"bce": bce, "mse": mse}

    def forward(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        terms = self.components(output, batch)
        return self.bce_weight * terms["bce"] + self.mse_weight * terms["mse"]


class OccupancyNLL(nn.Module):
    """Negative log-likelihood of :class:`dm2gal.models.ProbabilisticNet` output
    ``(B, 1 + 3K, n, n, n)`` under its :class:`dm2gal.models.OccupancyMixture`: the mean over the
    valid voxels of ``-log(1 - p)`` where empty and ``-log p - log q(y_n)`` where occupied, with
    ``q`` the mixture density per unit normalised target ``y_n`` (nats per voxel; add
    ``log(std * ln 10 * (1 + M))`` per occupied voxel for the density per unit mass). Unweighted,
    so that the network learns the conditional distribution itself, except for a batch's
    ``weight`` (one per crop, from a sampler with ``importance: true``): each crop's voxels then
    count with the crop's importance weight, so that crops drawn more often than uniformly count
    less and the average is the uniform one. ``family`` is the mixture's component law (the
    network's ``family``, :mod:`dm2gal.models.mixture`).
    """

    name = "nll"

    def __init__(self, family: str = "normal") -> None:
        super().__init__()
        self.family = check_family(family, "loss.family")

    def forward(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        target, occupied = batch["target"], batch["occupied"]
        if output.shape[0] != target.shape[0] or output.shape[2:] != target.shape[2:]:
            raise ValueError(
                f"loss 'nll': output {tuple(output.shape)} does not match target "
                f"{tuple(target.shape)} (expected (B, 1 + 3K, n, n, n))"
            )
        log_prob = OccupancyMixture(output, family=self.family).log_prob(target, occupied)
        mask = _valid(batch, log_prob)
        weight = batch.get("weight")
        if weight is not None:
            mask = mask * weight.to(mask.dtype).view(-1, *([1] * (mask.ndim - 1)))
        return -_masked_mean(log_prob, mask)
