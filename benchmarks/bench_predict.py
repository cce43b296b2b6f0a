"""Time full-volume prediction (``dm2gal.infer.predict.predict_region``) in voxels per second.

Two networks from their configs: the default ``conf/model/unet3d.yaml`` over a whole ``--grid``^3
box at each of ``--tiles`` output tile sides, and the paper's centre-voxel network
``conf/model/dm2gal.yaml`` (one 65^3 input per voxel) over a ``--paper-region``^3 region at each
of ``--paper-batches`` centres per forward pass. Two more rows bound the speed whatever the
network: "host reads" times only the chunk reads from the (memory-mapped) store with 1 and 4
reader threads, the host work a GPU cannot take over, and "pipeline only" predicts the box with
a network that only cuts the centre of its input (the UNet's context): reading, moving,
normalising, tiling and writing. CPU in float32, CUDA (when present) in bf16 autocast and
channels-last. Each configuration is warmed up on a small region, then timed once over the whole
region, input reads and normalisation included. Weights are random (speed does not depend on
them). Usage::

    python benchmarks/bench_predict.py --grid 64 --tiles 16 32 64 --threads 2
    python benchmarks/bench_predict.py --grid 512 --tiles 64 128 --unet channels=64 levels=2

Prints a Markdown table (``--json PATH``: its rows to a file too).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dm2gal.data.regions import Region
from dm2gal.infer.predict import (
    PredictOptions,
    plan_chunks,
    predict_region,
    read_block,
    tile_size,
)
from dm2gal.io.store import atomic_write_text
from dm2gal.models.base import FieldNet, center_crop, count_parameters

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def load_net(name: str, overrides: list[str]) -> FieldNet:
    """The network of ``conf/model/<name>.yaml`` with ``key=value`` overrides."""
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = cfg.model if "model" in cfg else cfg  # a global-package option (paper_cnn, ...)
    return instantiate(OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides)))


class CentreCrop(FieldNet):
    """No network: the first input channel's central voxels (``context`` cut on each side)."""

    def __init__(self, context: int) -> None:
        super().__init__()
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return center_crop(x[:, :1], x.shape[-1] - 2 * self.context)


def normalise(raw: torch.Tensor) -> torch.Tensor:
    return torch.log1p(raw) - 20.0


def denormalise(y: torch.Tensor) -> torch.Tensor:
    return torch.expm1(y.clamp(max=30.0))


def time_prediction(
    net: FieldNet,
    fields: list[np.ndarray],
    region: Region,
    tile: int,
    batch: int,
    device: str,
) -> float:
    """Seconds to predict ``region`` once, after a warm-up on one tile batch."""
    warm = Region(region.start, (min(tile_size(net, tile), region.size[0]),) * 3, region.grid)
    options = PredictOptions(tile, batch, device == "cuda", device, progress=False)
    if device == "cuda":
        net.to(memory_format=torch.channels_last_3d)
    predict_region(net, fields, warm, normalise, denormalise, options)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    predict_region(net, fields, region, normalise, denormalise, options)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_reads(
    fields: list[np.ndarray], context: int, tile: int, step: int, region: Region, threads: int
) -> float:
    """Seconds to read every chunk of ``region``'s tiles (side ``tile``, every ``step``) as
    prediction does, with ``threads`` reader threads."""
    chunk_voxels = PredictOptions.chunk_voxels
    chunks = plan_chunks(region, step, tile + 2 * context, context, chunk_voxels)
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        for _, _, corner, shape in chunks:
            read_block(fields, corner, shape, pool=pool, slabs=threads)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, default=64, help="box side in voxels (UNet)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=4, help="UNet tiles per forward pass")
    parser.add_argument("--unet", nargs="*", default=[], help="key=value overrides of unet3d")
    parser.add_argument("--paper-region", type=int, default=2, help="paper-net region side")
    parser.add_argument("--paper-batches", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--paper", nargs="*", default=[], help="key=value overrides of paper_cnn")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices:
        torch.backends.cudnn.benchmark = True

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:  # memory-mapped, as the store serves them
        for i in range(2):
            np.save(f"{tmp}/{i}.npy", rng.lognormal(20.0, 1.0, (args.grid,) * 3).astype(np.float32))
        fields = [np.load(f"{tmp}/{i}.npy", mmap_mode="r") for i in range(2)]
        title, rows = run_all(args, fields, devices)
    if args.json:
        atomic_write_text(args.json, json.dumps({"title": title, "rows": rows}, indent=1))


COLUMNS = [
    "model",
    "params",
    "context",
    "device",
    "dtype",
    "region",
    "tile",
    "batch",
    "s",
    "voxels/s",
]


def run_all(
    args: argparse.Namespace, fields: list[np.ndarray], devices: list[str]
) -> tuple[str, list[dict[str, str]]]:
    """Print the table; return its title and rows."""
    rows = []

    def emit(*cells: object) -> None:
        cells = [str(c) for c in cells]
        print("| " + " | ".join(cells) + " |", flush=True)
        rows.append(dict(zip(COLUMNS, cells, strict=True)))

    unet, paper = load_net("unet3d", args.unet), load_net("paper_cnn", args.paper)
    box = Region((0, 0, 0), (args.grid,) * 3, args.grid)
    unet_settings = [(tile, args.batch) for tile in args.tiles]
    runs = [
        ("pipeline only", CentreCrop(unet.context), box, unet_settings),
        ("unet3d", unet, box, unet_settings),
        (
            "dm2gal (paper)",
            paper,
            Region((0, 0, 0), (args.paper_region,) * 3, args.grid),
            [(1, batch) for batch in args.paper_batches],
        ),
    ]
    title = f"torch {torch.__version__}, {args.threads} CPU threads"
    print(title)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    voxels = args.grid**3
    for field in fields:  # page the memory-mapped fields in
        field.sum()
    for tile, threads in itertools.product(args.tiles, (1, 4)):
        t = tile_size(unet, tile)
        step = t - t % unet.period
        seconds = time_reads(fields, unet.context, t, step, box, threads)
        name = f"host reads, {threads} thread{'s' * (threads > 1)}"
        emit(
            name,
            "-",
            unet.context,
            "cpu",
            "fp32",
            f"{args.grid}^3",
            step,
            "-",
            f"{seconds:.3f}",
            f"{voxels / seconds:.3g}",
        )
    for name, net, region, settings in runs:
        voxels = int(np.prod(region.size))
        for device in devices:
            dtype = "bf16" if device == "cuda" else "fp32"
            for tile, batch in settings:
                t = tile_size(net, tile)
                seconds = time_prediction(net, fields, region, tile, batch, device)
                emit(
                    name,
                    f"{count_parameters(net):,}",
                    net.context,
                    device,
                    dtype,
                    f"{region.size[0]}^3",
                    t,
                    batch,
                    f"{seconds:.3f}",
                    f"{voxels / seconds:.3g}",
                )
    return title, rows


if __name__ == "__main__":
    main()
