"""Painting in x-slabs: one slab per process (a SLURM array through the submitit launcher, or
one after another), assembled into the same output as one-process painting, bit for bit.

Each slab job: builds the input fields once into ``<out>.slabs/inputs`` (a cached store: the
first complete build is kept, later jobs reuse it), predicts its x-range of the box, and writes
each predicted field's slab to ``<out>.slabs/<field>.<i>.npy`` by an atomic rename, so a slab is
there whole or not at all and a failed slab reruns alone. The job that finds every slab there
assembles them (under an exclusive lock file) into ``out``, staged and renamed as
:func:`dm2gal.paint.pipeline.paint_run` writes it, then removes the slab files. Slab edges are
multiples of the tile step, so every voxel is predicted from the same tile as in one process
(:mod:`dm2gal.infer.predict`: the result does not depend on the region's split).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
from pathlib import Path

import numpy as np

from dm2gal.data.regions import Region
from dm2gal.errors import ConfigError
from dm2gal.infer.exported import TrainedModel
from dm2gal.infer.parameters import record_parameters
from dm2gal.infer.predict import predict_fields, prediction_outputs, tile_size
from dm2gal.io.store import FieldStore, atomic_path, staged_dir
from dm2gal.paint.pipeline import Painting, PaintOptions, PaintSummary
from dm2gal.paint.sources import GravitySource

WORK_SUFFIX = ".slabs"
LOCK_FILE = "assemble.lock"


def work_dir(out: str | Path) -> Path:
    """The slabs' working directory beside ``out``."""
    out = Path(out)
    return out.with_name(out.name + WORK_SUFFIX)


def slab_bounds(grid: int, slabs: int, step: int) -> list[tuple[int, int]]:
    """``slabs`` x-ranges covering ``grid`` planes, their edges multiples of ``step``."""
    units = math.ceil(grid / step)
    if isinstance(slabs, bool) or not isinstance(slabs, int) or not 1 <= slabs <= units:
        raise ConfigError(
            f"slabs: expected 1..{units} (a {grid}^3 grid in tiles of {step}), got {slabs!r}"
        )
    edges = [min(grid, round(i * units / slabs) * step) for i in range(slabs + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def slab_path(work: Path, name: str, slab: int) -> Path:
    return work / f"{name}.{slab}.npy"


def paint_slab(
    model: TrainedModel,
    source: GravitySource,
    out: str | Path,
    slabs: int,
    slab: int,
    options: PaintOptions,
) -> PaintSummary | None:
    """Paint slab ``slab`` of ``slabs``; assemble ``out`` when every slab is there (then return
    its summary, else None)."""
    painting = Painting.plan(model, source, out, options)
    if isinstance(slab, bool) or not isinstance(slab, int) or not 0 <= slab < slabs:
        raise ConfigError(f"slab: expected an index 0..{slabs - 1} of the slabs, got {slab!r}")
    work = work_dir(out)
    inputs = painting.source.with_grid(painting.grid, work / "inputs").build()
    predict = painting.predict_options()
    tile = tile_size(model.net, predict.tile)
    bounds = slab_bounds(painting.grid, slabs, tile - tile % model.net.period)
    start, stop = bounds[slab]
    grid = painting.grid
    region = Region((start, 0, 0), (stop - start, grid, grid), grid)
    fields = [inputs.read(name) for name in painting.inputs]
    seeds = painting.seeds
    predicted = predict_fields(model.net, model.transform, fields, region, predict, seeds=seeds)
    names = list(prediction_outputs(inputs, painting.inputs, model.transform, predict.tile,
                                    options.name, seeds=seeds))  # fmt: skip
    for name, array in zip(names, predicted if seeds else [predicted], strict=True):
        with atomic_path(slab_path(work, name, slab)) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
    if all(slab_path(work, n, i).is_file() for n in names for i in range(slabs)):
        return assemble(painting, inputs, slabs)
    return None


def assemble(painting: Painting, inputs: FieldStore, slabs: int) -> PaintSummary | None:
    """Join the slabs into ``painting.out`` (one process at a time: the holder of the lock
    file; None for the others) and remove the slab files."""
    work = work_dir(painting.out)
    try:
        lock = os.open(work / LOCK_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return None  # another slab job assembles
    os.write(lock, f"{os.getpid()} {socket.gethostname()}\n".encode())
    os.close(lock)
    model, options = painting.model, painting.options
    try:
        with staged_dir(painting.out, nbytes=painting.disk_bytes) as staging:
            shutil.copytree(inputs.root, staging, dirs_exist_ok=True)
            store = FieldStore(staging)
            record_parameters(store, model.net)
            outputs = prediction_outputs(
                store, painting.inputs, model.transform, painting.predict_options().tile,
                options.name, painting.field_attrs(), painting.seeds,
            )  # fmt: skip
            for name, attrs in outputs.items():
                with store.create(name, **attrs) as field:
                    x0 = 0
                    for i in range(slabs):
                        part = np.load(slab_path(work, name, i))
                        field[x0 : x0 + len(part)] = part
                        x0 += len(part)
            summary = painting.finish(store)
        shutil.rmtree(work)
        return summary
    finally:
        (work / LOCK_FILE).unlink(missing_ok=True)
