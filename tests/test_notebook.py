"""notebooks/analysis.ipynb executes against a fresh smoke run, so it never rots."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ROOT, mock_cache_dir, run_script

NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


@pytest.mark.slow
def test_analysis_notebook_runs_on_a_smoke_run(tmp_path: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    run_script(
        "train.py",
        "experiment=smoke",
        "logger=csv",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={mock_cache_dir()}",
        "trainer.max_epochs=1",
    )
    (metrics,) = tmp_path.glob("**/evaluation/metrics.json")
    run_dir = metrics.parent.parent

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel must be this interpreter (the venv's), not whatever "python" is on PATH
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    monkeypatch.setenv("DM2GAL_RUN_DIR", str(run_dir))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    # P(k) + r(k), bispectrum, slices, PDF, predicted vs true
    assert len(images) == 5
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert f"run: {run_dir}" in text
    assert text.strip().splitlines()[-1] == sys.prefix
