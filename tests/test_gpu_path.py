"""The GPU path (networks, Lightning module, tiled prediction, torch statistics, the loader, the
GPU benchmarks and the GPU tests) imports and runs without Pylians, halotools, W&B, submitit or
colossus, which the GPU machine lacks (see benchmarks/gpu_check.sh)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT

MISSING = ("Pk_library", "MAS_library", "halotools", "wandb", "submitit", "colossus")
MODULES = (
    "dm2gal.models",
    "dm2gal.train.losses",
    "dm2gal.train.module",
    "dm2gal.infer.predict",
    "dm2gal.stats.torch_backend",
    "dm2gal.stats.pylians",  # imported by tests/test_stats_torch.py; Pylians only when called
    "dm2gal.data",
)
SCRIPTS = (
    "benchmarks/bench_models.py",
    "benchmarks/bench_stats.py",
    "benchmarks/bench_predict.py",
    "benchmarks/bench_loader.py",
    "benchmarks/gpu_report.py",
    "tests/test_predict.py",
    "tests/test_stats_torch.py",
)

BLOCKER = """
import importlib.abc
import sys

MISSING = {missing!r}


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}} (refused)", name=name)
        return None


sys.meta_path.insert(0, Refuse())
"""

CHECK = """
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

for name in {modules!r}:
    importlib.import_module(name)
for i, script in enumerate({scripts!r}):
    spec = importlib.util.spec_from_file_location(f"gpu_path_{{i}}", Path({root!r}) / script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.infer.predict import PredictOptions, predict_fields
from dm2gal.models import UNet3d
from dm2gal.stats.torch_backend import cross_power

torch.manual_seed(0)
net = UNet3d(in_channels=2, channels=2, levels=1, convs=1).eval()
rng = np.random.default_rng(0)
inputs = [rng.lognormal(20.0, 1.0, (8, 8, 8)).astype(np.float32) for _ in range(2)]
transform = FieldTransform([8.7, 8.7], [0.4, 0.4], target_mean=8.0, target_std=1.0)
out = predict_fields(
    net, transform, inputs, Region((0, 0, 0), (8, 8, 8), 8),
    PredictOptions(tile=4, device="cpu", progress=False),
)
r = cross_power(out, inputs[0], 75.0).r
assert out.shape == (8, 8, 8) and np.isfinite(r).all(), r
for name in {missing!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    raise AssertionError(f"{{name}} was not refused")
print("gpu path ok")
"""


def test_gpu_path_imports_and_runs_without_optional_packages():
    code = BLOCKER.format(missing=MISSING) + CHECK.format(
        modules=MODULES, scripts=SCRIPTS, root=str(ROOT), missing=MISSING
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("gpu path ok")
