"""Quantile calibration of a predicted stellar-mass field, fitted on the training region only.

A network regressing log mass per voxel returns a conditional mean of the log: the bright end is
compressed and the total mass comes out low (the exponential of a mean log is below the mean).
The calibration is the monotone map from predicted to true mass per voxel that makes the voxel
mass PDF of the prediction equal the truth's on the training region (quantile mapping); applied
to a held-out region it restores the PDF without looking at the held-out truth. A voxel predicted
empty (<= 0) stays empty. numpy has quantiles and interpolation but no quantile-mapping helper
(scipy neither), hence the few lines here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dm2gal.data.regions import Region
from dm2gal.data.splits import Splits
from dm2gal.io.store import FieldStore, atomic_path, slabs

#: the file a fitted calibration is saved to (in a run's evaluation folder, an exported model)
CALIBRATION_FILE = "calibration.csv"


@dataclass(frozen=True)
class QuantileMap:
    """Piecewise-linear map through matching quantiles (Msun/h per voxel) of the predicted and
    the true training-region voxels; ``predicted`` strictly increasing."""

    predicted: np.ndarray
    true: np.ndarray

    @classmethod
    def fit(cls, predicted: np.ndarray, true: np.ndarray, knots: int = 4097) -> QuantileMap:
        """Match ``knots`` evenly spaced quantiles of the two samples (any sizes, flattened)."""
        predicted, true = np.ravel(predicted), np.ravel(true)
        if predicted.size == 0 or true.size == 0:
            raise ValueError(
                "calibration: no training-region voxels to fit on (predict more slabs: a larger "
                "evaluation.calibration_voxels, or 0 to turn the calibration off)"
            )
        if not (np.isfinite(predicted).all() and np.isfinite(true).all()):
            raise ValueError("calibration: predicted and true masses must be finite")
        levels = np.linspace(0.0, 1.0, knots)
        x = np.quantile(predicted.astype(np.float64), levels)
        y = np.quantile(true.astype(np.float64), levels)
        # equal predicted quantiles (a run of identical values): keep the first, the lowest mass
        first = np.r_[True, np.diff(x) > 0]
        return cls(x[first], y[first])

    def save(self, path: str | Path) -> None:
        """Write the knots as a CSV table ``predicted,true`` (Msun/h), atomically."""
        with atomic_path(path) as tmp:
            np.savetxt(
                tmp, np.c_[self.predicted, self.true], delimiter=",", header="predicted,true"
            )

    @classmethod
    def load(cls, path: str | Path) -> QuantileMap:
        """Read knots written by :meth:`save`."""
        try:
            knots = np.loadtxt(path, delimiter=",", ndmin=2)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a calibration table (predicted,true): {err}") from err
        if knots.shape[1] != 2 or not (np.diff(knots[:, 0]) > 0).all():
            raise ValueError(f"{path}: expected two columns with increasing 'predicted' knots")
        return cls(knots[:, 0], knots[:, 1])

    def __call__(self, field: np.ndarray) -> np.ndarray:
        """The calibrated field (float32, Msun/h per voxel); clamped to the fitted range."""
        field = np.asarray(field)
        out = np.interp(field, self.predicted, self.true)
        return np.where(field > 0, out, 0.0).astype(np.float32)


def training_slabs(splits: Splits, thickness: int, max_voxels: int) -> list[Region]:
    """Whole-box x-slabs of ``thickness`` planes, evenly spaced, holding about ``max_voxels``
    voxels in all (at least one slab; every slab when the box fits): where to predict the
    training region for :func:`fit_calibration`."""
    if (
        int(max_voxels) != max_voxels
        or max_voxels < 1
        or int(thickness) != thickness
        or thickness < 1
    ):
        raise ValueError(
            "calibration: slab thickness and evaluation.calibration_voxels must be integers >= 1, "
            f"got {thickness!r} and {max_voxels!r}"
        )
    grid = splits.grid
    thickness = min(thickness, grid)
    total = grid // thickness
    count = min(total, max(1, max_voxels // (thickness * grid * grid)))
    starts = np.linspace(0, total, count, endpoint=False).astype(int) * thickness
    return [Region((int(x), 0, 0), (thickness, grid, grid), grid) for x in starts]


def fit_calibration(
    predict: Callable[[Region], np.ndarray],
    target: np.ndarray,
    splits: Splits,
    thickness: int,
    max_voxels: int = 1 << 24,
) -> QuantileMap:
    """Fit a :class:`QuantileMap` on the training-region voxels of evenly spaced slabs.

    Args:
        predict: the predicted mass field (Msun/h per voxel) on a region.
        target: the true ``grid^3`` stellar-mass field (memory-mapped is fine).
        splits: the held-out regions; only voxels outside them and their guard band count.
        thickness: slab thickness (voxels), e.g. the prediction tile side.
        max_voxels: about how many voxels to predict.
    """

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for slab in training_slabs(splits, thickness, max_voxels):
            x0, x1 = slab.start[0], slab.start[0] + slab.size[0]
            keep = splits.train_mask_planes(x0, x1)
            yield predict(slab)[keep], np.asarray(target[x0:x1])[keep]

    predicted, true = zip(*pairs(), strict=True)
    return QuantileMap.fit(np.concatenate(predicted), np.concatenate(true))


def calibrate_store_field(
    store: FieldStore, name: str, calibrate: QuantileMap, out_name: str, **attrs: object
) -> None:
    """Write field ``out_name`` = ``calibrate(name)`` into ``store``, slab by slab through a
    memory map (recorded, with ``attrs``, only when complete)."""
    source = store.read(name)
    with store.create(out_name, **attrs) as out:
        for slab in slabs(store.grid):
            out[slab] = calibrate(source[slab])
