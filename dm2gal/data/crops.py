"""Periodic crops of memory-mapped fields: target crops of side ``n`` with ``context`` voxels of
input padding on each side, wrapped at the box edges, aligned exactly.

Anchors are the target-crop start corners on a lattice ``axes[0] x axes[1] x axes[2]`` of
voxel indices; a dataset holds the flat lattice indices of its anchors, so a large lattice costs
a few bytes per anchor and no field is ever loaded whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dm2gal.data.splits import Splits
from dm2gal.data.symmetry import Symmetry
from dm2gal.data.transforms import FieldTransform


def _pieces(start: int, length: int, grid: int) -> list[tuple[slice, slice]]:
    """(source, destination) slices covering ``[start, start + length)`` wrapped in ``grid``."""
    pieces, dst, src = [], 0, start % grid
    while dst < length:
        take = min(length - dst, grid - src)
        pieces.append((slice(src, src + take), slice(dst, dst + take)))
        dst, src = dst + take, 0
    return pieces


def read_crop(
    field: np.ndarray,
    start: Sequence[int],
    size: int | Sequence[int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The box ``[start, start + size)`` (``size``: one side or three) of a periodic ``grid^3``
    field, as float32 (into ``out`` if given); reads only the needed rows of a memory-mapped
    field (at most 8 slice copies when it wraps once)."""
    grid = field.shape[0]
    sizes = (size,) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    out = np.empty(sizes, dtype=np.float32) if out is None else out
    px, py, pz = (_pieces(int(s), n, grid) for s, n in zip(start, sizes, strict=True))
    for sx, dx in px:
        for sy, dy in py:
            for sz, dz in pz:
                out[dx, dy, dz] = field[sx, sy, sz]
    return out


class FieldCrops(Dataset):
    """Input / target crop pairs, normalised, as dicts of tensors.

    Args:
        paths: ``.npy`` files of the input channels, then the target (opened memory-mapped
            lazily, so the dataset pickles cheaply into loader workers).
        crop: target side ``n`` (voxels); inputs have side ``n + 2 * context``.
        context: input padding on each side (voxels).
        axes: anchor lattice, three arrays of target-crop start voxels.
        anchors: flat indices into the lattice (None: all of it).
        transform: the normalisation (None: raw Msun/h crops, normalised later on the device).
        symmetries: one drawn at random per item (None or one: no augmentation).
        region: if given, ``valid`` marks target voxels inside it (validation / test tiles).
        min_target_mass: if given, ``valid`` also requires raw target > this (Msun/h).
        shift: if > 0, each anchor moves by a random offset in ``[0, shift)`` per axis when the
            moved input still lies in ``splits``' training region.
        splits: the held-out regions a shifted input must avoid; None: the whole box trains.
        seed: seeds the augmentation generator (loader workers use their own worker seed).
        params: the box's parameter vector (float32 ``(P,)``, raw units), carried by every
            item as ``params``; None: items carry none (a single-universe box).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        crop: int,
        context: int,
        axes: Sequence[np.ndarray],
        anchors: np.ndarray | None,
        transform: FieldTransform | None,
        symmetries: Sequence[Symmetry] | None = None,
        region=None,
        min_target_mass: float | None = None,
        shift: int = 0,
        splits: Splits | None = None,
        seed: int = 0,
        params: np.ndarray | None = None,
    ):
        self.paths = [str(p) for p in paths]
        self.crop, self.context = int(crop), int(context)
        self.axes = tuple(np.asarray(a, dtype=np.int64) for a in axes)
        self.shape = tuple(len(a) for a in self.axes)
        size = int(np.prod(self.shape))
        self.anchors = np.arange(size) if anchors is None else np.asarray(anchors)
        self.transform = transform
        self.symmetries = tuple(symmetries or ())
        self.region, self.min_target_mass = region, min_target_mass
        self.shift, self.splits = int(shift), splits
        self.seed = int(seed)
        self.params = None if params is None else np.asarray(params, dtype=np.float32)
        self._fields: list[np.ndarray] | None = None
        self._gen: torch.Generator | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fields": None, "_gen": None}

    @property
    def gen(self) -> torch.Generator:
        """Augmentation generator for plain integer keys: this dataset's seed, or the loader
        worker's seed (keys from :class:`AugmentationSeeds` carry their own seed)."""
        if self._gen is None:
            worker = torch.utils.data.get_worker_info()
            seed = worker.seed if worker is not None else self.seed
            self._gen = torch.Generator().manual_seed(seed % 2**63)
        return self._gen

    @property
    def fields(self) -> list[np.ndarray]:
        if self._fields is None:
            self._fields = [np.load(p, mmap_mode="r") for p in self.paths]
        return self._fields

    def __len__(self) -> int:
        return len(self.anchors)

    def start(self, i: int) -> np.ndarray:
        """Target-crop start voxel of item ``i`` (before any random shift)."""
        idx = np.unravel_index(int(self.anchors[i]), self.shape)
        return np.array([self.axes[ax][idx[ax]] for ax in range(3)])

    def _shifted(self, start: np.ndarray, gen: torch.Generator) -> np.ndarray:
        moved = start + torch.randint(0, self.shift, (3,), generator=gen).numpy()
        if self.splits is None:
            return moved
        size = self.crop + 2 * self.context
        return moved if self.splits.cube_allowed(moved - self.context, size)[0] else start

    def _normalised(self, x: np.ndarray, method: str) -> np.ndarray:
        if self.transform is None:
            return x if x.base is None else np.array(x, order="C")  # views: fresh strides
        return getattr(self.transform, method)(x)

    def __getitem__(self, key: int | tuple) -> dict[str, torch.Tensor]:
        """Item ``key``: an anchor index, or ``(index, augmentation seed)``, or ``(index, seed,
        importance weight)`` (then the item carries ``weight``, a float32 scalar)."""
        weight = None
        if isinstance(key, tuple):
            i, gen = key[0], torch.Generator().manual_seed(key[1])
            weight = key[2] if len(key) > 2 else None
        else:
            i, gen = key, self.gen
        start = self.start(i)
        if self.shift:
            start = self._shifted(start, gen)
        *inputs, target = self.fields
        c, n = self.context, self.crop
        x = np.empty((len(inputs),) + (n + 2 * c,) * 3, dtype=np.float32)
        for f, out in zip(inputs, x, strict=True):
            read_crop(f, start - c, n + 2 * c, out)
        y = read_crop(target, start, n)[None]
        valid = np.ones_like(y, dtype=bool)
        if self.region is not None:
            for ax in range(3):
                offset = (start[ax] + np.arange(n) - self.region.start[ax]) % self.region.grid
                shape = [-1 if a == ax else 1 for a in range(3)]
                valid &= (offset < self.region.size[ax]).reshape(shape)[None]
        if self.min_target_mass is not None:
            valid &= y > self.min_target_mass
        if len(self.symmetries) > 1:
            sym = self.symmetries[int(torch.randint(0, len(self.symmetries), (), generator=gen))]
            x, y, valid = sym(x), sym(y), sym(valid)
        item = {
            "input": torch.from_numpy(self._normalised(x, "forward_input")),
            "target": torch.from_numpy(self._normalised(y, "forward_target")),
            # copies: flipped views of size-1 axes keep negative strides that torch refuses
            "occupied": torch.from_numpy((y > 0).copy()),
            "valid": torch.from_numpy(valid.copy()),
        }
        if self.params is not None:
            item["params"] = torch.from_numpy(self.params.copy())
        if weight is not None:
            item["weight"] = torch.tensor(weight, dtype=torch.float32)
        return item


class ConcatCrops(Dataset):
    """Several :class:`FieldCrops` (e.g. the training region of one box and further whole
    boxes) as one dataset, item ``i`` of the concatenation; keys may carry an augmentation seed
    and an importance weight as :meth:`FieldCrops.__getitem__`'s do."""

    def __init__(self, parts: Sequence[FieldCrops]):
        if not parts:
            raise ValueError("ConcatCrops: expected at least one dataset")
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, key: int | tuple) -> dict[str, torch.Tensor]:
        i, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, None)
        if not 0 <= i < len(self):
            raise IndexError(f"ConcatCrops: index {i} out of range for {len(self)} crops")
        part = int(np.searchsorted(self.ends, i, side="right"))
        local = int(i) - (int(self.ends[part - 1]) if part else 0)
        return self.parts[part][local if rest is None else (local, *rest)]


def lattice(grid: int, stride: int, offset: int = 0) -> np.ndarray:
    """Anchor starts ``offset, offset + stride, ...`` covering one period of the grid."""
    return (offset + np.arange(0, grid, stride)) % grid


def crop_stat(target: np.ndarray, axes: Sequence[np.ndarray], crop: int) -> np.ndarray:
    """``log10(1 + M)`` per anchor of the lattice, M = the target crop's total mass (Msun/h),
    the central voxel for ``crop == 1``; shape ``(len(axes[0]), len(axes[1]), len(axes[2]))``.

    Reads ``crop`` planes per anchor row, never the whole field at once (float64 sums)."""
    grid = target.shape[0]
    ys, zs = (np.asarray(a) for a in axes[1:])
    out = np.empty(tuple(len(a) for a in axes), dtype=np.float32)
    for i, x0 in enumerate(np.asarray(axes[0])):
        plane = np.zeros((grid, grid), dtype=np.float64)
        for sx, _ in _pieces(int(x0), crop, grid):
            plane += np.asarray(target[sx], dtype=np.float64).sum(axis=0)
        for ax, starts in ((0, ys), (1, zs)):
            ext = np.concatenate([plane, plane.take(np.arange(crop) % grid, axis=ax)], axis=ax)
            cum = np.concatenate([np.zeros_like(ext.take([0], axis=ax)), ext.cumsum(axis=ax)], ax)
            plane = cum.take(starts + crop, axis=ax) - cum.take(starts, axis=ax)
        out[i] = np.log10(1.0 + np.maximum(plane, 0.0))
    return out
