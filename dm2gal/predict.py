"""Tiled, batched inference over a whole region of the box with periodic context.

The region is cut into output tiles of ``tile^3`` voxels anchored at the region's start; each
tile's input is the tile widened by the network's context on every side, read with wrap-around
from the (memory-mapped) store, so box edges are handled exactly as in training. A network is
equivariant only to shifts by its ``period`` (``2**levels`` for a UNet), so tiles are placed
every ``step`` voxels, the largest multiple of the period not above the tile side; where the
tile side is not such a multiple, neighbouring tiles overlap and each keeps its first ``step``
voxels. Tiles past the region's end are predicted in full and cut. Every voxel is thus computed
at the same phase: the result does not depend on the tile size. The paper's centre-voxel network
is the case ``tile = 1`` with many centres per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.models.base import FieldNet


def tile_size(net: FieldNet, tile: int) -> int:
    """The output tile side to use: the network's fixed output, else the largest valid size
    not above ``tile`` and not below the network's period (the shift its output is equivariant
    to). Where valid sizes are multiples of the period (plain convolutions; a UNet with
    ``levels=2, convs=2``) tiles sit side by side on the same down-sampling grid; where none is
    (a UNet with ``levels=3, convs=2``: sides 4 modulo 8) tiles overlap so that they still do
    (see :func:`predict_region`)."""
    if net.fixed_output is not None:
        return net.fixed_output
    for size in range(tile, net.period - 1, -1):
        if net.valid_output(size):
            return size
    raise ValueError(
        f"tile: no output side in {net.period}..{tile} is valid for {type(net).__name__} "
        f"(period {net.period}, possible output sides: {net.output_rule()})"
    )


def tile_anchors(region: Region, step: int) -> list[tuple[int, int, int]]:
    """Offsets (inside the region) of tiles placed every ``step`` voxels, covering it."""
    counts = [math.ceil(s / step) for s in region.size]
    return [
        (i * step, j * step, k * step)
        for i in range(counts[0])
        for j in range(counts[1])
        for k in range(counts[2])
    ]


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def predict_region(
    net: FieldNet,
    inputs: Sequence[np.ndarray],
    region: Region,
    normalise_input: Callable[[np.ndarray], np.ndarray],
    denormalise_target: Callable[[torch.Tensor], torch.Tensor],
    tile: int = 32,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Predict the target (Msun/h per voxel, clipped at 0) on every voxel of ``region``.

    Args:
        net: a trained network (set to eval mode here).
        inputs: the input fields, each ``grid^3`` (memory-mapped arrays are fine).
        region: the voxels to predict.
        normalise_input: maps a raw ``(C, n, n, n)`` input block to the network's input.
        denormalise_target: maps the network's ``(B, 1, n, n, n)`` output back to mass per voxel.
        tile: requested output tile side (voxels); see :func:`tile_size`.
        batch_size: tiles per forward pass.
        device: where to run; bf16 autocast is used on CUDA.
    """
    device = torch.device(device)
    net = net.to(device).eval()
    t = tile_size(net, tile)
    step = t - t % net.period
    c = net.context
    anchors = tile_anchors(region, step)
    padded = [math.ceil(s / step) * step for s in region.size]
    out = np.empty(padded, dtype=np.float32)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for batch in tqdm(list(_batches(anchors, batch_size)), desc="predict", disable=not progress):
        blocks = []
        for offset in batch:
            start = [region.start[ax] + offset[ax] - c for ax in range(3)]
            raw = np.stack([read_crop(f, start, t + 2 * c) for f in inputs])
            blocks.append(normalise_input(raw))
        x = torch.from_numpy(np.stack(blocks).astype(np.float32)).to(device)
        with autocast:
            y = net.infer(x)
        # a network may undershoot the empty-voxel value; a mass per voxel is never negative
        y = denormalise_target(y.float()).clamp_(min=0).cpu().numpy()
        for (i, j, k), block in zip(batch, y, strict=True):
            out[i : i + step, j : j + step, k : k + step] = block[0, :step, :step, :step]
    sx, sy, sz = region.size
    return np.ascontiguousarray(out[:sx, :sy, :sz])
