"""Normalisation: ``log10(1 + x)`` then standardisation per channel, with an exact inverse.

Statistics come from the training region only (:func:`fit_transform`) and travel with the data
module's state (``state_dict``), never baked into stored fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from dm2gal.data.splits import Splits
from dm2gal.errors import ConfigError
from dm2gal.io.store import slabs

LN10 = math.log(10.0)
Array = np.ndarray | torch.Tensor


class FieldTransform:
    """Per-channel ``y = (log10(1 + x) - mean) / std`` (``log=False``: no log step).

    Args:
        input_mean, input_std: one value per input channel.
        target_mean, target_std: the target channel's values.
        log: apply ``log10(1 + x)`` first (x in Msun/h per voxel).
        target_max: the largest target voxel of the training region (Msun/h), which bounds
            predictions (:meth:`inverse_prediction`); None: unbounded.
    """

    def __init__(
        self,
        input_mean: Sequence[float],
        input_std: Sequence[float],
        target_mean: float = 0.0,
        target_std: float = 1.0,
        log: bool = True,
        target_max: float | None = None,
    ):
        self.input_mean = np.asarray(input_mean, dtype=np.float64).reshape(-1)
        self.input_std = np.asarray(input_std, dtype=np.float64).reshape(-1)
        if self.input_mean.shape != self.input_std.shape:
            raise ValueError("transform: input_mean and input_std need one value per channel")
        if (self.input_std <= 0).any() or not target_std > 0:
            raise ValueError(f"transform: std must be > 0, got {self.input_std}, {target_std}")
        self.target_mean, self.target_std, self.log = float(target_mean), float(target_std), log
        self.target_max = None if target_max is None else float(target_max)

    @property
    def empty_value(self) -> float:
        """The normalised value of a zero-mass target voxel."""
        return -self.target_mean / self.target_std

    def _forward(self, x: Array, mean: np.ndarray, std: np.ndarray) -> Array:
        scale, shift = 1.0 / (LN10 * std if self.log else std), mean / std
        if isinstance(x, torch.Tensor):
            scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
            shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
            return (torch.log1p(x) if self.log else x) * scale - shift
        # numpy: one C-contiguous output, written in place (inputs may be strided views)
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
        out = np.empty(np.broadcast_shapes(x.shape, mean.shape), dtype=dtype)
        if self.log:
            np.log1p(x, out=out)
            out *= scale.astype(dtype)
        else:
            np.multiply(x, scale.astype(dtype), out=out)
        out -= shift.astype(dtype)
        return out

    def forward_input(self, x: Array) -> Array:
        """Normalise inputs (Msun/h per voxel) of shape ``(..., C, n, n, n)``, numpy or torch."""
        return self._forward(
            x, self.input_mean.reshape(-1, 1, 1, 1), self.input_std.reshape(-1, 1, 1, 1)
        )

    def forward_target(self, y: Array) -> Array:
        """Normalise targets (Msun/h per voxel) of any shape, numpy or torch."""
        return self._forward(y, np.array(self.target_mean), np.array(self.target_std))

    def inverse_target(self, y: Array) -> Array:
        """Map normalised targets back to Msun/h per voxel (exact inverse of forward_target)."""
        z = y * self.target_std + self.target_mean
        if not self.log:
            return z
        if isinstance(z, torch.Tensor):
            return torch.expm1(z * LN10)
        z = np.asarray(z)
        return np.expm1(z * z.dtype.type(LN10))

    def inverse_prediction(self, y: torch.Tensor) -> torch.Tensor:
        """A network's normalised prediction in Msun/h per voxel, at most ``target_max``.

        A network regressing log mass has no bound above, and exponentiating an extrapolation
        lets a single voxel carry more stellar mass than a whole held-out cube; predictions
        therefore stay within the largest target the training region showed.
        """
        mass = self.inverse_target(y)
        return mass if self.target_max is None else mass.clamp(max=self.target_max)

    def state_dict(self) -> dict[str, Any]:
        return {
            "input_mean": self.input_mean.tolist(),
            "input_std": self.input_std.tolist(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "log": self.log,
            "target_max": self.target_max,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def __repr__(self) -> str:
        return f"FieldTransform({self.state_dict()})"


def _training_values(
    field: np.ndarray, splits: Splits, chunk_voxels: int = 1 << 24
) -> Iterator[np.ndarray]:
    """The training-region values of ``field`` (float64), slab by slab of ~``chunk_voxels``."""
    for slab in slabs(field.shape[0], chunk_voxels):
        keep = splits.train_mask_planes(slab.start, slab.stop)
        yield np.asarray(field[slab], dtype=np.float64)[keep]


def _per_box(field: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One box's field as a list of one, or the same field of several boxes as they are."""
    return [field] if isinstance(field, np.ndarray) else list(field)


def region_moments(
    field: np.ndarray | Sequence[np.ndarray],
    splits: Splits,
    log: bool = True,
    chunk_voxels: int = 1 << 24,
) -> tuple[float, float]:
    """Mean and standard deviation of ``log10(1 + field)`` (or ``field``) over the training
    region of ``splits``, read in slabs of about ``chunk_voxels`` voxels (float64 sums); a
    sequence of fields (the same field of several boxes on one grid) gives the pooled moments of
    all their training regions."""
    total = total2 = count = 0.0
    for box in _per_box(field):
        for values in _training_values(box, splits, chunk_voxels):
            if log:
                values = np.log1p(values) / LN10
            total, total2 = total + values.sum(), total2 + (values**2).sum()
            count += len(values)
    if count == 0:
        raise ConfigError(
            "data.splits: the training region is empty (the held-out regions and their guard "
            "band cover the box), no normalisation to fit"
        )
    mean = total / count
    return mean, math.sqrt(max(total2 / count - mean**2, 0.0))


def region_max(
    field: np.ndarray | Sequence[np.ndarray], splits: Splits, chunk_voxels: int = 1 << 24
) -> float:
    """The largest value of ``field`` (or of several boxes' fields) over the training region of
    ``splits``."""
    return max(
        float(v.max(initial=0.0))
        for box in _per_box(field)
        for v in _training_values(box, splits, chunk_voxels)
    )


def fit_transform(
    inputs: Sequence[np.ndarray | Sequence[np.ndarray]],
    target: np.ndarray | Sequence[np.ndarray],
    splits: Splits,
    log: bool = True,
    standardize: bool = True,
) -> FieldTransform:
    """Fit per-channel statistics on the training region (``standardize=False``: mean 0, std 1);
    each channel (and the target) one box's field or a list of several boxes' (pooled).

    A constant channel gets std 1 so the transform stays invertible.
    """
    moments = [region_moments(f, splits, log) if standardize else (0.0, 1.0) for f in inputs]
    t_mean, t_std = region_moments(target, splits, log) if standardize else (0.0, 1.0)
    return FieldTransform(
        [m for m, _ in moments],
        [s if s > 0 else 1.0 for _, s in moments],
        t_mean,
        t_std if t_std > 0 else 1.0,
        log,
        region_max(target, splits),
    )
