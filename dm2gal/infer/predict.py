"""Tiled, batched inference over a whole region of the box with periodic context.

The region is cut into output tiles of ``tile^3`` voxels anchored at the region's start; each
tile's input is the tile widened by the network's context on every side, wrapped at the box
edges exactly as in training. A network is equivariant only to shifts by its ``period``
(``2**levels`` for a UNet), so tiles are placed every ``step`` voxels, the largest multiple of
the period not above the tile side; where the tile side is not such a multiple, neighbouring
tiles overlap and each keeps its first ``step`` voxels. Tiles past the region's end are predicted
in full and cut. Every voxel is thus computed at the same phase: the result does not depend on
the tile size. The paper's centre-voxel network is the case ``tile = 1``.

The store is read in chunks of whole tiles (about ``chunk_voxels`` input voxels per channel): a
chunk's input is read once, so the context that neighbouring tiles share is not read again
(a chunk of ``m^3`` centre voxels of the paper's network reads ``(m + 64)^3`` voxels, not
``m^3`` crops of ``65^3``), moved to the device, normalised and cut into tiles there, and
predicted in batches of tiles while background threads read the next chunk.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.io.store import FieldStore, StoreError
from dm2gal.models.base import FieldNet

#: requested output tile side (voxels) where no setting gives one
DEFAULT_TILE = 32


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class PredictOptions:
    """How a region is predicted: output ``tile`` side (voxels, see :func:`tile_size`),
    ``batch_size`` tiles per pass, channels-last inputs, ``device`` (None: :func:`default_device`)
    and a progress bar."""

    tile: int = DEFAULT_TILE
    batch_size: int = 4
    channels_last: bool = False
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("tile", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}: expected an integer >= 1, got {value!r}")


def predict_fields(
    net: FieldNet,
    transform: FieldTransform,
    inputs: Sequence[np.ndarray],
    region: Region,
    options: PredictOptions = PredictOptions(),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The target (Msun/h per voxel) predicted by ``net`` on ``region`` from the raw ``inputs``
    fields, normalised and denormalised by the run's ``transform``: the one call behind the
    validation callback, the evaluation and ``python -m dm2gal.predict``."""
    return predict_region(
        net,
        inputs,
        region,
        transform.forward_input,
        transform.inverse_prediction,
        tile=options.tile,
        batch_size=options.batch_size,
        device=options.device or default_device(),
        progress=options.progress,
        channels_last=options.channels_last,
        out=out,
    )


def check_tile(net: FieldNet, tile: Any) -> int:
    """``tile`` (the option of that name: output voxels per side) if ``net`` takes outputs of
    that side, else :class:`ConfigError` saying which sides it takes: never rounded."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ConfigError(f"tile: expected an integer >= 1 (output voxels per side), got {tile!r}")
    if net.valid_output(tile):
        return tile
    below = next((n for n in range(tile - 1, 0, -1) if net.valid_output(n)), None)
    ahead = range(tile + 1, tile + 4 * net.period + 2)
    above = next((n for n in ahead if net.valid_output(n)), None)
    nearest = " or ".join(str(n) for n in (below, above) if n is not None)
    raise ConfigError(
        f"tile: {type(net).__name__} does not take outputs of {tile} voxels per side; valid "
        f"sides: {net.output_rule()}" + (f" (nearest: {nearest})" if nearest else "")
    )


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
    raise ConfigError(
        f"tile: no output side in {net.period}..{tile} is valid for {type(net).__name__} "
        f"(period {net.period}, possible output sides: {net.output_rule()})"
    )


def tiles_per_chunk(step: int, width: int, chunk_voxels: int) -> int:
    """The most tiles per axis (at least 1) whose chunk input, ``(m - 1) * step + width`` voxels
    per side, holds at most ``chunk_voxels`` voxels."""
    m = 1
    while (m * step + width) ** 3 <= chunk_voxels:
        m += 1
    return m


def chunk_grid(counts: Sequence[int], per_chunk: int) -> list[tuple[tuple[int, ...], ...]]:
    """``(first tile, number of tiles)`` per axis of the chunks covering ``counts`` tiles."""
    axes = [[(i, min(per_chunk, n - i)) for i in range(0, n, per_chunk)] for n in counts]
    return [tuple(zip(*parts, strict=True)) for parts in itertools.product(*axes)]


def plan_chunks(
    region: Region, step: int, width: int, context: int, chunk_voxels: int
) -> list[tuple[tuple[int, ...], tuple[int, ...], list[int], list[int]]]:
    """``(first tile, tiles, input start, input shape)`` per axis of each chunk covering
    ``region`` with tiles every ``step`` voxels whose inputs are ``width`` voxels wide (the
    output tile plus ``context`` on each side); a chunk reads about ``chunk_voxels`` voxels."""
    counts = [math.ceil(s / step) for s in region.size]
    return [
        (
            first,
            tiles,
            [region.start[ax] + first[ax] * step - context for ax in range(3)],
            [(n - 1) * step + width for n in tiles],
        )
        for first, tiles in chunk_grid(counts, tiles_per_chunk(step, width, chunk_voxels))
    ]


def read_block(
    inputs: Sequence[np.ndarray],
    start: Sequence[int],
    shape: Sequence[int],
    pin: bool = False,
    pool: ThreadPoolExecutor | None = None,
    slabs: int = 1,
) -> torch.Tensor:
    """The raw ``(C, *shape)`` float32 input block at ``start`` (periodic), in pinned memory for
    an asynchronous copy to a GPU if ``pin``; read in ``slabs`` x-slabs per channel, on
    ``pool``'s threads when given (numpy copies release the GIL)."""
    block = torch.empty((len(inputs), *shape), dtype=torch.float32, pin_memory=pin)
    edges = np.linspace(0, shape[0], min(slabs, shape[0]) + 1).astype(int)
    jobs = [
        (field, (start[0] + x0, start[1], start[2]), (x1 - x0, *shape[1:]), out[x0:x1])
        for field, out in zip(inputs, block.numpy(), strict=True)
        for x0, x1 in zip(edges[:-1], edges[1:], strict=True)
    ]
    if pool is None:
        for job in jobs:
            read_crop(*job)
    else:
        list(pool.map(lambda job: read_crop(*job), jobs))
    return block


def predict_chunk(
    net: FieldNet,
    x: torch.Tensor,
    tiles: Sequence[int],
    step: int,
    denormalise_target: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Mass per voxel (Msun/h, clipped at 0) on the ``tiles * step`` voxels of one chunk of
    ``tiles`` = (a, b, d) tiles, from its normalised input ``x`` of shape ``(C, ...)``."""
    width = x.shape[1] - (tiles[0] - 1) * step
    # (C, a, b, d, width, width, width): every tile's input as a view of the chunk
    windows = x.unfold(1, width, step).unfold(2, width, step).unfold(3, width, step)
    a, b, d = tiles
    pred = torch.empty((a, b, d, step, step, step), device=x.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.device.type == "cuda")
    for batch in torch.arange(a * b * d, device=x.device).split(batch_size):
        index = (batch // (b * d), batch // d % b, batch % d)
        xb = windows[:, index[0], index[1], index[2]].transpose(0, 1)
        with autocast:
            y = net.infer(xb.contiguous(memory_format=memory_format))
        # a network may undershoot the empty-voxel value; a mass per voxel is never negative
        pred[index] = denormalise_target(y.float())[:, 0, :step, :step, :step].clamp(min=0)
    return pred.permute(0, 3, 1, 4, 2, 5).reshape(a * step, b * step, d * step)


@torch.no_grad()
def predict_region(
    net: FieldNet,
    inputs: Sequence[np.ndarray],
    region: Region,
    normalise_input: Callable[[torch.Tensor], torch.Tensor],
    denormalise_target: Callable[[torch.Tensor], torch.Tensor],
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = True,
    channels_last: bool = False,
    chunk_voxels: int = 1 << 24,
    read_threads: int = 4,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Predict the target (Msun/h per voxel, clipped at 0) on every voxel of ``region``.

    Args:
        net: a trained network (set to eval mode here).
        inputs: the input fields, each ``grid^3`` (memory-mapped arrays are fine).
        region: the voxels to predict.
        normalise_input: maps a raw ``(C, x, y, z)`` input tensor (on ``device``) to the
            network's input.
        denormalise_target: maps the network's ``(B, 1, n, n, n)`` output back to mass per voxel.
        tile: requested output tile side (voxels); see :func:`tile_size`.
        batch_size: tiles per forward pass.
        device: where to run; bf16 autocast is used on CUDA.
        progress: show a progress bar (tiles).
        channels_last: feed the network channels-last 3D tensors (for a network stored so).
        chunk_voxels: input voxels per channel read, moved and normalised at once.
        read_threads: threads reading a chunk (in x-slabs) while the previous one is predicted.
        out: where to write the prediction (shape ``region.size``, e.g. a memory map); None: a
            new array.
    """
    if out is not None and tuple(out.shape) != tuple(region.size):
        raise ValueError(f"out: shape {tuple(out.shape)}, expected the region's {region.size}")
    result = np.empty(region.size, dtype=np.float32) if out is None else out
    device = torch.device(device)
    net = net.to(device).eval()
    t = tile_size(net, tile)
    step = t - t % net.period
    chunks = plan_chunks(region, step, t + 2 * net.context, net.context, chunk_voxels)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format

    def read(chunk: tuple) -> torch.Tensor:
        _, _, start, shape = chunk
        return read_block(inputs, start, shape, device.type == "cuda", readers, read_threads)

    total = sum(math.prod(tiles) for _, tiles, _, _ in chunks)
    bar = tqdm(total=total, desc="predict", unit="tile", disable=not progress)
    prefetch, readers = ThreadPoolExecutor(max_workers=1), ThreadPoolExecutor(read_threads)
    with prefetch, readers, bar:
        pending = prefetch.submit(read, chunks[0])
        for index, (first, tiles, _, _) in enumerate(chunks):
            raw = pending.result()
            if index + 1 < len(chunks):
                pending = prefetch.submit(read, chunks[index + 1])
            x = normalise_input(raw.to(device, non_blocking=True))
            pred = predict_chunk(net, x, tiles, step, denormalise_target, batch_size, memory_format)
            i, j, k = (f * step for f in first)
            sx, sy, sz = region.size  # tiles past the region's end are cut
            piece = pred[: sx - i, : sy - j, : sz - k].cpu().numpy()
            a, b, d = piece.shape
            result[i : i + a, j : j + b, k : k + d] = piece
            bar.update(math.prod(tiles))
    return result


def predict_store(
    net: FieldNet,
    transform: FieldTransform,
    source: FieldStore,
    inputs: Sequence[str],
    out_dir: str | Path,
    name: str,
    attrs: dict[str, Any] | None = None,
    voxel_size: float | None = None,
    options: PredictOptions = PredictOptions(),
) -> FieldStore:
    """Predict the whole box of ``source`` (a field store holding the ``inputs`` fields) into
    field ``name`` (Msun/h per voxel) of the field store at ``out_dir``, written through a memory
    map chunk by chunk (never whole in memory) and recorded with its provenance only when
    complete, with ``attrs`` (e.g. the checkpoint). ``out_dir`` is created, or must hold a
    store of the same box and grid. ``voxel_size`` (Mpc/h), the one the network was trained on,
    must match the source's."""
    fields = [source.read(field) for field in inputs]
    grid, box = source.grid, source.box
    if voxel_size is not None and not math.isclose(box / grid, voxel_size, rel_tol=1e-6):
        raise ConfigError(
            f"{source.root}: voxels of {box / grid:.6g} Mpc/h ({grid}^3 in {box} Mpc/h); the "
            f"network was trained on voxels of {voxel_size:.6g} Mpc/h"
        )
    store = FieldStore(out_dir)
    if store.root.resolve() == source.root.resolve() and name in source.fields():
        raise StoreError(f"{store.root}: the prediction would overwrite its field '{name}'")
    if not store.exists():
        store.init(box, grid, source=str(source.root))
    elif (store.grid, store.box) != (grid, box):
        raise StoreError(
            f"{store.root}: holds a {store.grid}^3 box of {store.box} Mpc/h, not the input "
            f"store's {grid}^3 box of {box} Mpc/h ({source.root})"
        )
    provenance = {
        "units": "Msun/h per voxel",
        "source": str(source.root),
        "input_hashes": {field: source.field_meta(field)["hash"] for field in inputs},
        "transform": transform.state_dict(),
        "tile": options.tile,
        **(attrs or {}),
    }
    region = Region((0, 0, 0), (grid,) * 3, grid)
    with store.create(name, **provenance) as array:
        predict_fields(net, transform, fields, region, options, out=array)
    return store
