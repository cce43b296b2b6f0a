"""Train-step and inference throughput of every model at fp32 and bf16; prints a table.

    python benchmarks/bench_models.py --quick                 # CPU, small sizes, seconds
    python benchmarks/bench_models.py --device cuda --gpu-sizes --compile

A train step is forward + loss + backward + Adam step (bf16: autocast forward and loss, fp32
weights, as Lightning's ``bf16-mixed``); inference is ``net.infer`` in eval mode under
``torch.inference_mode``. On CUDA, cudnn.benchmark is on, TF32 is allowed for fp32 and models
and inputs are channels-last 3D (``--no-channels-last`` turns it off). ``MFLOP/vox`` is the
forward cost per output voxel, borders included (torch's FLOP counter, 2 per multiply-add; it
falls towards the borderless figure as tiles grow, see ``--side``). ``bf16 rel`` is
max |out_bf16 - out_fp32| / max |out_fp32| of the raw (forward) outputs, eval mode, same input
and weights.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dm2gal.io.store import atomic_write_text
from dm2gal.models import FieldNet, PaperNet, ResNet3d, TwoPhaseNet, UNet3d, count_parameters
from dm2gal.train.losses import MSELoss, TwoPhaseLoss

# name -> (class, constructor arguments, output side, batch size)
PRESETS = {
    "quick": {
        "unet3d": (UNet3d, {"channels": 16, "levels": 2}, 16, 2),
        "resnet3d": (ResNet3d, {"channels": 32, "blocks": 4}, 16, 2),
        "paper_cnn": (PaperNet, {"channels": 16}, 1, 2),
        "twophase": (TwoPhaseNet, {"channels": 16, "levels": 2}, 16, 2),
    },
    "cpu": {
        "unet3d": (UNet3d, {"channels": 16, "levels": 2}, 32, 4),
        "resnet3d": (ResNet3d, {"channels": 32, "blocks": 4}, 32, 4),
        "paper_cnn": (PaperNet, {"channels": 64}, 1, 4),
        "twophase": (TwoPhaseNet, {"channels": 16, "levels": 2}, 32, 4),
    },
    # the references: the paper net (ch=64, batch 8) and a 64-channel 2-level unpadded UNet
    # (1.13 MFLOP per output voxel without borders; a 96^3 tile with context 20 costs ~1.6)
    "gpu": {
        "unet3d": (UNet3d, {"channels": 64, "levels": 2}, 96, 4),
        "resnet3d": (ResNet3d, {"channels": 64, "blocks": 4}, 64, 8),
        "paper_cnn": (PaperNet, {"channels": 64}, 1, 8),
        "twophase": (TwoPhaseNet, {"channels": 64, "levels": 2}, 96, 4),
    },
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    """Mean wall-clock seconds of one call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def bench_model(
    name: str, spec: tuple, device: torch.device, args: argparse.Namespace
) -> list[dict[str, str]]:
    """Rows (fp32, bf16) of the table for one model."""
    cls, kwargs, n, batch = spec
    torch.manual_seed(0)
    net: FieldNet = cls(in_channels=2, out_channels=1, **kwargs).to(device)
    n = n if args.side is None or net.fixed_output is not None else args.side
    batch = args.batch or batch
    side = n + 2 * net.context
    fmt = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(batch, 2, side, side, side, device=device).to(memory_format=fmt)
    target = torch.randn(batch, 1, n, n, n, device=device)
    data = {"target": target, "occupied": target > 0.5}
    loss_fn = TwoPhaseLoss() if isinstance(net, TwoPhaseNet) else MSELoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    forward = torch.compile(net) if args.compile else net
    infer = torch.compile(net.infer) if args.compile else net.infer

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(x[:1])
    mflop = counter.get_total_flops() / n**3 / 1e6

    def infer_step(bf16: bool) -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, bf16):
            return infer(x)

    net.eval()
    with torch.inference_mode():  # raw outputs: a two-phase threshold flip is not a bf16 error
        fp32 = forward(x).float()
        with _autocast(device, True):
            bf16 = forward(x).float()
    rel = f"{((bf16 - fp32).abs().max() / fp32.abs().max()).item():.1e}"

    rows = []
    for use_bf16 in (False, True):

        def train_step(bf16: bool = use_bf16) -> None:
            opt.zero_grad(set_to_none=True)
            with _autocast(device, bf16):
                loss = loss_fn(forward(x), data)
            loss.backward()
            opt.step()

        net.train()
        t_train = _seconds(train_step, device, args.warmup, args.steps)
        net.eval()
        t_infer = _seconds(lambda b=use_bf16: infer_step(b), device, args.warmup, args.steps)
        voxels = batch * n**3
        rows.append(
            {
                "model": name,
                "params": f"{count_parameters(net):,}",
                "ctx": str(net.context),
                "batch x out^3": f"{batch} x {n}^3",
                "prec": "bf16" if use_bf16 else "fp32",
                "MFLOP/vox": f"{mflop:.3g}",
                "train samp/s": f"{batch / t_train:.3g}",
                "train vox/s": f"{voxels / t_train:.3g}",
                "infer samp/s": f"{batch / t_infer:.3g}",
                "infer vox/s": f"{voxels / t_infer:.3g}",
                "bf16 rel": rel if use_bf16 else "-",
            }
        )
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("| " + " | ".join(c.ljust(width[c]) for c in cols) + " |")
    print("|" + "|".join("-" * (width[c] + 2) for c in cols) + "|")
    for r in rows:
        print("| " + " | ".join(r[c].rjust(width[c]) for c in cols) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, few steps (CPU check)")
    parser.add_argument("--gpu-sizes", action="store_true", help="the issue's reference sizes")
    parser.add_argument("--models", default="unet3d,resnet3d,paper_cnn,twophase")
    parser.add_argument("--side", type=int, help="output side of the field-to-field models")
    parser.add_argument("--batch", type=int, help="batch size of every model")
    parser.add_argument("--compile", action="store_true", help="torch.compile forward and infer")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 1 / 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed calls (default 2 / 10)")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        args.channels_last = False  # no gain for 3D convolutions on CPU
    preset = "gpu" if args.gpu_sizes else "quick" if args.quick else "cpu"
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 10)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(PRESETS[preset]))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {sorted(PRESETS[preset])}")

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    title = (
        f"{where}, torch {torch.__version__}, preset {preset}, threads "
        f"{torch.get_num_threads()}, compile {args.compile}, channels_last {args.channels_last}"
    )
    print(f"# {title}")
    rows = [row for name in names for row in bench_model(name, PRESETS[preset][name], device, args)]
    print_table(rows)
    if args.json:
        atomic_write_text(args.json, json.dumps({"title": title, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
