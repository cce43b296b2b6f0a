"""Training-loader throughput: crops/s and MB/s from a 512^3 store on disk, 0 and 2 workers.

    OMP_NUM_THREADS=1 python benchmarks/bench_loader.py [--grid 512] [--batches 30]
    python benchmarks/bench_loader.py --device cuda     # batches pinned and moved to the GPU

Setups: (a) the paper's network, 2 x 65^3 inputs for a 1^3 target (context 32); (b) a UNet,
64^3 targets with context 20 (2 x 104^3 inputs). Fields are random, written chunk by chunk with
FieldStore.create into a temporary directory (deleted afterwards unless --keep). Reports the
growth of anonymous memory (RssAnon: not the page cache of the memory-mapped fields) while
loading (main process; workers are separate processes), after a few warm-up batches, and
the time to set the data module up (the first one fits the normalisation on 3 x 512^3).
"normalise: device" yields raw crops and defers log10(1 + x) to on_after_batch_transfer.
With ``--device cuda`` the loader feeds the GPU as in training: pinned batches are copied to
the device (non-blocking) and on_after_batch_transfer runs there; the clock stops after a
device synchronisation. ``--json PATH`` writes the table's rows to a file too.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dm2gal.data import FieldDataModule, UniformSampler
from dm2gal.io.store import FieldStore, atomic_write_text

WARMUP = 3
SETUPS = {  # name: (crop, context, batch size, anchor stride)
    "a: 1^3 target, 2x65^3 in": (1, 32, 64, 2),
    "b: 64^3 target, 2x104^3 in": (64, 20, 2, 16),
}


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_store(root: Path, grid: int) -> FieldStore:
    store = FieldStore(root)
    if store.exists() and store.grid == grid:
        return store
    store.init(100.0, grid, source="bench_loader random fields")
    rng = np.random.default_rng(0)
    for name, sparse in (("dm", 1.0), ("subhalo", 0.3), ("stellar", 0.1)):
        with store.create(name) as array:
            for x in range(0, grid, 16):
                block = rng.lognormal(20, 2, (16, grid, grid)).astype(np.float32)
                block[rng.random(block.shape) > sparse] = 0
                array[x : x + 16] = block
    return store


def run(
    store: FieldStore,
    crop: int,
    context: int,
    batch: int,
    stride: int,
    workers: int,
    batches: int,
    state: dict | None,
    on_device: bool,
    device: torch.device,
) -> tuple[dict, float, float, float, float]:
    sampler = functools.partial(UniformSampler, samples_per_epoch=batch * (batches + WARMUP))
    dm = FieldDataModule(
        store,
        crop=crop,
        context=context,
        sampler=sampler,
        stride=stride,
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        normalize_on_device=on_device,
    )
    if state is not None:
        dm.load_state_dict(state)
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    loader = iter(dm.train_dataloader())

    def next_batch() -> dict:
        batch = next(loader)
        if device.type == "cpu":
            return batch
        moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return dm.on_after_batch_transfer(moved, 0)

    for _ in range(WARMUP):  # workers started; one batch held, as in the timed loop
        b = next_batch()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rss0, t0 = rss_anon_mb(), time.perf_counter()
    nbytes = 0
    for _ in range(batches):
        b = next_batch()
        nbytes += b["input"].numel() * 4 + b["target"].numel() * 4
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return dm.state_dict(), setup_s, batches * batch / dt, nbytes / dt / 2**20, rss_anon_mb() - rss0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=512)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=None, help="store directory (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument("--device", default="cpu", help="where batches go (cpu: stay in RAM)")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="bench_loader_")
    root = args.dir or Path(tmp.name)
    t0 = time.perf_counter()
    store = make_store(root, args.grid)
    print(f"store {root} {args.grid}^3 x 3 fields ready in {time.perf_counter() - t0:.0f} s")
    title = f"{args.grid}^3 store, batches to {device}"
    columns = ["setup", "normalise", "workers", "batch", "setup s", "crops/s", "MB/s"]
    columns += ["RssAnon growth MB"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|")
    state, rows = None, []
    for name, (crop, context, batch, stride) in SETUPS.items():
        for on_device, workers in itertools.product((False, True), (0, 2)):
            state, setup_s, crops, mbs, grow = run(
                store, crop, context, batch, stride, workers, args.batches, state, on_device, device
            )
            where = "device" if on_device else "loader"
            cells = [name, where, str(workers), str(batch), f"{setup_s:.1f}", f"{crops:.0f}"]
            cells += [f"{mbs:.0f}", f"{grow:.1f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
            rows.append(dict(zip(columns, cells, strict=True)))
    if tmp is not None and not args.keep:
        tmp.cleanup()
    if args.json:
        atomic_write_text(args.json, json.dumps({"title": title, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
