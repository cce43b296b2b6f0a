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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from dm2gal.data.crops import read_crop
from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError, integer_option
from dm2gal.infer.copula import CopulaKernel
from dm2gal.infer.naming import PredictionNames
from dm2gal.infer.noise import voxel_noise
from dm2gal.infer.parameters import record_parameters
from dm2gal.io.store import FieldStore, StoreError, field_bytes, require_free_space
from dm2gal.models.base import FieldNet

#: requested output tile side (voxels) where no setting gives one
DEFAULT_TILE = 32


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class PredictOptions:
    """How a region is predicted: output ``tile`` side (voxels, see :func:`tile_size`),
    ``batch_size`` tiles per pass, channels-last inputs, ``device`` (None:
    :func:`default_device`), a progress bar, ``chunk_voxels`` input voxels per channel read,
    moved and normalised at once, ``read_threads`` reading a chunk (in x-slabs) while the
    previous one is predicted, and the ``copula`` whose correlated noise the draws take
    (:mod:`dm2gal.infer.copula`; None: noise independent per voxel)."""

    tile: int = DEFAULT_TILE
    batch_size: int = 4
    channels_last: bool = False
    device: str | None = None
    progress: bool = True
    chunk_voxels: int = 1 << 24
    read_threads: int = 4
    copula: CopulaKernel | None = None

    def __post_init__(self) -> None:
        for key in ("tile", "batch_size", "chunk_voxels", "read_threads"):
            object.__setattr__(self, key, integer_option(getattr(self, key), key, minimum=1))

    def torch_device(self) -> torch.device:
        """The device to run on."""
        return torch.device(self.device) if self.device else default_device()

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of the network's input tensors."""
        return torch.channels_last_3d if self.channels_last else torch.contiguous_format


def predict_fields(
    net: FieldNet,
    transform: FieldTransform,
    inputs: Sequence[np.ndarray],
    region: Region,
    options: PredictOptions = PredictOptions(),
    out: np.ndarray | Sequence[np.ndarray] | None = None,
    seeds: Sequence[int] = (),
) -> np.ndarray | list[np.ndarray]:
    """The target (Msun/h per voxel) predicted by ``net`` on ``region`` from the raw ``inputs``
    fields, normalised and denormalised by the run's ``transform``: the one call behind the
    validation callback, the evaluation and ``python -m dm2gal.predict``. With ``seeds`` (a
    probabilistic network), the mean and one draw per seed (see :func:`predict_region`)."""
    normalise, denormalise = transform.forward_input, transform.inverse_prediction
    return predict_region(net, inputs, region, normalise, denormalise, options, out, seeds)


def check_tile(net: FieldNet, tile: Any) -> int:
    """``tile`` (the option of that name: output voxels per side) if ``net`` takes outputs of
    that side, else :class:`ConfigError` saying which sides it takes: never rounded."""
    tile = integer_option(tile, "tile", minimum=1)
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


class Chunk(NamedTuple):
    """A block of whole tiles predicted together: per axis its first tile and number of tiles,
    and the start (voxels, periodic) and shape of the input it reads."""

    first: tuple[int, ...]
    tiles: tuple[int, ...]
    start: list[int]
    shape: list[int]


def plan_chunks(
    region: Region, step: int, width: int, context: int, chunk_voxels: int
) -> list[Chunk]:
    """The chunks covering ``region`` with tiles every ``step`` voxels whose inputs are
    ``width`` voxels wide (the output tile plus ``context`` on each side); a chunk reads about
    ``chunk_voxels`` voxels."""
    counts = [math.ceil(s / step) for s in region.size]
    return [
        Chunk(
            first,
            tiles,
            [region.start[ax] + first[ax] * step - context for ax in range(3)],
            [(n - 1) * step + width for n in tiles],
        )
        for first, tiles in chunk_grid(counts, tiles_per_chunk(step, width, chunk_voxels))
    ]


@dataclass(frozen=True)
class TilePlan:
    """How ``region`` is tiled: output tiles of ``tile`` voxels placed every ``step`` voxels
    (a multiple of the network's period), read and predicted in ``chunks``."""

    region: Region
    tile: int
    step: int
    chunks: list[Chunk]

    @classmethod
    def of(cls, net: FieldNet, region: Region, options: PredictOptions) -> TilePlan:
        """The plan for ``net`` (see :func:`tile_size` and the module's docstring)."""
        tile = tile_size(net, options.tile)
        step = tile - tile % net.period
        width = tile + 2 * net.context
        return cls(
            region, tile, step, plan_chunks(region, step, width, net.context, options.chunk_voxels)
        )

    @property
    def tile_count(self) -> int:
        """Tiles in all chunks."""
        return sum(math.prod(chunk.tiles) for chunk in self.chunks)

    def output_box(self, chunk: Chunk) -> tuple[list[int], list[int]]:
        """The start (in the box) and shape of ``chunk``'s predicted voxels, uncut."""
        start = [self.region.start[ax] + chunk.first[ax] * self.step for ax in range(3)]
        return start, [(n - 1) * self.step + self.tile for n in chunk.tiles]


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
    options: PredictOptions,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mass per voxel (Msun/h, clipped at 0), ``(F, a * step, b * step, d * step)``, on the
    voxels of one chunk of ``tiles`` = (a, b, d) tiles, from its normalised input ``x`` of shape
    ``(C, ...)``: the network's prediction (``F = 1``), or with ``noise`` ``(K, 3 or 1, ...)``
    (the noise of K draws on the chunk's output block, :func:`draw_noise`) the mean and K
    draws of a probabilistic network (``F = 1 + K``, one forward pass); ``options``' batch
    size and memory format."""
    width = x.shape[1] - (tiles[0] - 1) * step
    # (C, a, b, d, width, width, width): every tile's input as a view of the chunk
    windows = x.unfold(1, width, step).unfold(2, width, step).unfold(3, width, step)
    t = width - 2 * net.context
    if noise is not None:  # (K, 3 or 1, a, b, d, t, t, t): every tile's noise
        noise = noise.unfold(2, t, step).unfold(3, t, step).unfold(4, t, step)
    a, b, d = tiles
    fields = 1 if noise is None else 1 + noise.shape[0]
    pred = torch.empty((fields, a, b, d, step, step, step), device=x.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.device.type == "cuda")
    for batch in torch.arange(a * b * d, device=x.device).split(options.batch_size):
        index = (batch // (b * d), batch // d % b, batch % d)
        xb = windows[:, index[0], index[1], index[2]].transpose(0, 1)
        xb = xb.contiguous(memory_format=options.memory_format)
        with autocast:
            if noise is None:
                y = net.infer(xb)
            else:
                y = net.infer_draws(xb, noise[:, :, index[0], index[1], index[2]].movedim(2, 0))
        # a network may undershoot the empty-voxel value; a mass per voxel is never negative
        y = denormalise_target(y.float())[:, :, :step, :step, :step].clamp(min=0)
        pred[(slice(None), *index)] = y.transpose(0, 1)
    return pred.permute(0, 1, 4, 2, 5, 3, 6).reshape(fields, a * step, b * step, d * step)


def draw_noise(
    seeds: Sequence[int],
    start: Sequence[int],
    shape: Sequence[int],
    grid: int,
    copula: CopulaKernel | None = None,
) -> torch.Tensor:
    """The per-voxel noise of the draws ``seeds`` on the box ``[start, start + shape)`` of a
    periodic ``grid^3`` box: ``(K, 3, *shape)`` uniforms independent per voxel
    (:func:`dm2gal.infer.noise.voxel_noise`), or with ``copula`` ``(K, 1, *shape)`` its
    correlated uniforms (:meth:`CopulaKernel.uniform_noise`)."""
    if copula is None:
        return torch.stack([voxel_noise(seed, start, shape, grid) for seed in seeds])
    return torch.stack([copula.uniform_noise(seed, start, shape, grid) for seed in seeds])


def check_draws(net: FieldNet, seeds: Sequence[int]) -> None:
    """Draws (``seeds``) need a network that gives them."""
    if seeds and not hasattr(net, "infer_draws"):
        raise ConfigError(
            f"seeds: {type(net).__name__} is deterministic and gives no draws; draws need a "
            "probabilistic network (model=probabilistic)"
        )


def output_arrays(
    region: Region, fields: int, out: np.ndarray | Sequence[np.ndarray] | None
) -> list[np.ndarray]:
    """The ``fields`` arrays of ``region``'s shape a prediction writes: ``out`` (one array, or
    a sequence of ``fields`` > 1), checked, or new float32 arrays."""
    if out is None:
        return [np.empty(region.size, dtype=np.float32) for _ in range(fields)]
    results = list(out) if fields > 1 else [out]
    if len(results) != fields or any(tuple(r.shape) != tuple(region.size) for r in results):
        raise ValueError(
            f"out: shapes {[tuple(r.shape) for r in results]}, expected {fields} array(s) of "
            f"the region's {region.size}"
        )
    return results


@dataclass
class ChunkReader:
    """Reads a chunk's raw input block (in ``slabs`` x-slabs on ``pool``'s threads, in pinned
    memory if ``pin``) and, with ``seeds``, its draws' noise (correlated by ``copula``)."""

    inputs: Sequence[np.ndarray]
    plan: TilePlan
    seeds: Sequence[int]
    pool: ThreadPoolExecutor
    slabs: int
    pin: bool
    copula: CopulaKernel | None = None

    def __call__(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        raw = read_block(self.inputs, chunk.start, chunk.shape, self.pin, self.pool, self.slabs)
        if not self.seeds:
            return raw, None
        start, shape = self.plan.output_box(chunk)
        return raw, draw_noise(self.seeds, start, shape, self.plan.region.grid, self.copula)


def prefetched(
    read: Callable[[Chunk], tuple[torch.Tensor, torch.Tensor | None]], chunks: Sequence[Chunk]
) -> Iterator[tuple[Chunk, tuple[torch.Tensor, torch.Tensor | None]]]:
    """``(chunk, read(chunk))`` in order, the next chunk read on a background thread while the
    caller predicts the current one."""
    with ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = prefetch.submit(read, chunks[0])
        for index, chunk in enumerate(chunks):
            result = pending.result()
            if index + 1 < len(chunks):
                pending = prefetch.submit(read, chunks[index + 1])
            yield chunk, result


def write_chunk(
    results: Sequence[np.ndarray], pred: torch.Tensor, chunk: Chunk, plan: TilePlan
) -> None:
    """Write a chunk's prediction ``(F, ...)`` into the ``F`` region arrays ``results``, cutting
    the tiles past the region's end."""
    i, j, k = (f * plan.step for f in chunk.first)
    sx, sy, sz = plan.region.size
    piece = pred[:, : sx - i, : sy - j, : sz - k].cpu().numpy()
    a, b, d = piece.shape[1:]
    for result, field in zip(results, piece, strict=True):
        result[i : i + a, j : j + b, k : k + d] = field


@torch.no_grad()
def predict_region(
    net: FieldNet,
    inputs: Sequence[np.ndarray],
    region: Region,
    normalise_input: Callable[[torch.Tensor], torch.Tensor],
    denormalise_target: Callable[[torch.Tensor], torch.Tensor],
    options: PredictOptions = PredictOptions(),
    out: np.ndarray | Sequence[np.ndarray] | None = None,
    seeds: Sequence[int] = (),
) -> np.ndarray | list[np.ndarray]:
    """Predict the target (Msun/h per voxel, clipped at 0) on every voxel of ``region``; with
    ``seeds``, the mean and one draw per seed of a probabilistic network (a list of 1 + K
    fields, all from the same forward passes). A draw is fixed by its seed and each voxel's
    position in the box (:func:`dm2gal.infer.noise.voxel_noise`): it does not depend on the
    tiling, and a sub-region's draw is the same part of the whole box's.

    Args:
        net: a trained network (set to eval mode here).
        inputs: the input fields, each ``grid^3`` (memory-mapped arrays are fine).
        region: the voxels to predict.
        normalise_input: maps a raw ``(C, x, y, z)`` input tensor (on the device) to the
            network's input.
        denormalise_target: maps the network's ``(B, 1, n, n, n)`` output back to mass per voxel.
        options: tile, batch, device (bf16 autocast on CUDA), layout, chunks, reader threads.
        out: where to write the prediction (shape ``region.size``, e.g. a memory map; with
            ``seeds``, a sequence of 1 + K such arrays); None: new arrays.
        seeds: one draw per seed (needs a network with ``infer_draws``, e.g.
            :class:`dm2gal.models.ProbabilisticNet`).
    """
    check_draws(net, seeds)
    results = output_arrays(region, 1 + len(seeds), out)
    device = options.torch_device()
    net = net.to(device).eval()
    plan = TilePlan.of(net, region, options)
    bar = tqdm(total=plan.tile_count, desc="predict", unit="tile", disable=not options.progress)
    with ThreadPoolExecutor(options.read_threads) as pool, bar:
        read = ChunkReader(
            inputs, plan, seeds, pool, options.read_threads, device.type == "cuda", options.copula
        )
        for chunk, (raw, noise) in prefetched(read, plan.chunks):
            x = normalise_input(raw.to(device, non_blocking=True))
            noise = None if noise is None else noise.to(device, non_blocking=True)
            pred = predict_chunk(net, x, chunk.tiles, plan.step, denormalise_target, options, noise)
            write_chunk(results, pred, chunk, plan)
            bar.update(math.prod(chunk.tiles))
    return results if seeds else results[0]


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
    seeds: Sequence[int] = (),
) -> FieldStore:
    """Predict the whole box of ``source`` (a field store holding the ``inputs`` fields) into
    field ``name`` (Msun/h per voxel) of the field store at ``out_dir``, written through a memory
    map chunk by chunk (never whole in memory) and recorded with its provenance only when
    complete, with ``attrs`` (e.g. the checkpoint). ``out_dir`` is created, or must hold a
    store of the same box and grid; it records the parameters a conditioned ``net`` is bound
    to (:func:`dm2gal.infer.parameters.record_parameters`). ``voxel_size`` (Mpc/h), the one
    the network was trained on, must match the source's. With ``seeds`` (a probabilistic
    network), the fields are ``<name>_mean`` and ``<name>_draw_<i>`` (draw ``i`` from
    ``seeds[i]``, recorded in its metadata, all seeds in the mean's), from the same forward
    passes."""
    fields = [source.read(field) for field in inputs]
    grid, box = source.grid, source.box
    if voxel_size is not None:
        source.check_voxel_size(voxel_size, "the network was trained on")
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
    record_parameters(store, net)
    outputs = prediction_outputs(source, inputs, transform, options.tile, name, attrs, seeds)
    region = Region((0, 0, 0), (grid,) * 3, grid)
    require_free_space(
        store.root,
        field_bytes(grid, len(outputs)),
        f"the prediction ({len(outputs)} x {grid}^3 voxels)",
    )
    with ExitStack() as stack:
        arrays = [stack.enter_context(store.create(f, **meta)) for f, meta in outputs.items()]
        out = arrays if seeds else arrays[0]
        predict_fields(net, transform, fields, region, options, out=out, seeds=seeds)
    return store


def prediction_outputs(
    source: FieldStore,
    inputs: Sequence[str],
    transform: FieldTransform,
    tile: int,
    name: str,
    attrs: dict[str, Any] | None = None,
    seeds: Sequence[int] = (),
) -> dict[str, dict[str, Any]]:
    """The fields a prediction of ``source``'s box writes, each with its metadata (units,
    source, input hashes, normalisation, tile, ``attrs``; a draw's seed): ``name``, or with
    ``seeds`` ``<name>_mean`` and ``<name>_draw_<i>``."""
    provenance = {
        "units": "Msun/h per voxel",
        "source": str(source.root),
        "input_hashes": {field: source.field_meta(field)["hash"] for field in inputs},
        "transform": transform.state_dict(),
        "tile": tile,
        **(attrs or {}),
    }
    names = PredictionNames(name, len(seeds))
    if not seeds:
        return {names.mean: provenance}
    outputs = {names.mean: {**provenance, "draw_seeds": list(seeds)}}
    outputs.update(
        {draw: {**provenance, "seed": seed} for draw, seed in zip(names.draws, seeds, strict=True)}
    )
    return outputs
