"""benchmarks/gpu_check.sh skips without a GPU; its report gathers every step's status, rows and
log. (Its CPU dry mode, ``GPU_CHECK_FORCE_CPU=1``, takes minutes: it is run by hand.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2", **extra}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_skips_without_a_gpu(tmp_path: Path):
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "skipped, no CUDA GPU" in result.stdout
    assert not out.exists()


def test_report_gathers_status_rows_and_logs(tmp_path: Path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "logs").mkdir()
    lines = [
        "step\tstatus\tseconds\tlimit_s\tcommand",
        "gpu-tests\t1\t20\t90\tpytest -m gpu",
        "stats\t0\t12\t60\tpython bench_stats.py",
        "predict\t124\t100\t100\tpython bench_predict.py",
        "loader\tskipped\t0\t0\tpython bench_loader.py",
    ]
    (tmp_path / "steps.tsv").write_text("\n".join(lines) + "\n")
    rows = [{"grid": "512^3", "statistic": "P(k)", "time [s]": "0.0123"}]
    (tmp_path / "raw" / "stats.json").write_text(json.dumps({"title": "box 75", "rows": rows}))
    (tmp_path / "raw" / "gpu-tests.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_a" name="test_ok" time="1.5"/>'
        '<testcase classname="tests.test_a" name="test_bad" time="0.25">'
        '<failure message="assert 1 == 2&#10;more">trace</failure></testcase>'
        "</testsuite></testsuites>"
    )
    (tmp_path / "logs" / "predict.log").write_text("\n".join(f"line {i}" for i in range(40)))
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), str(tmp_path),
         "--budget", "480", "--seconds", "132", "--dry"],
        env={**_env(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert [s["status"] for s in report["steps"]] == [
        "failed (exit 1)",
        "ok",
        "timed out",
        "skipped (budget spent)",
    ]
    assert steps["stats"]["rows"] == rows and steps["stats"]["log_tail"] == []
    assert steps["gpu-tests"]["rows"] == [
        {"test": "tests.test_a::test_ok", "outcome": "passed", "s": "1.50", "message": ""},
        {"test": "tests.test_a::test_bad", "outcome": "failed", "s": "0.25",
         "message": "assert 1 == 2"},
    ]  # fmt: skip
    assert steps["predict"]["log_tail"] == [f"line {i}" for i in range(25, 40)]
    assert (report["budget_s"], report["seconds"]) == (480, 132)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| predict | timed out | 100 | 100 | `python bench_predict.py` |" in md
    assert "| 512^3 | P(k) | 0.0123 |" in md and "line 39" in md
