"""docs/figures.py's network figures from a run's evaluation: the strongest HOD is shown, and
the curves are those the report measures (torch cross power, up to its k_max)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from dm2gal.io.store import FieldStore
from dm2gal.stats.torch_backend import cross_power

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["model_mean", "model_draw_0", "model_draw_1", "oracle_mean", "oracle_draw"]
HODS = ["hod_a_mean", "hod_a_draw", "hod_b_mean", "hod_b_draw"]


def _figures_module():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path) -> Path:
    """A run whose evaluation holds a 16^3 test region's fields and metrics; hod_b the
    better-correlated HOD mean."""
    evaluation = tmp_path / "run" / "evaluation"
    store = FieldStore(evaluation / "fields")
    config = {"config": {"evaluation": {"report": {"mas": "CIC", "slice_width": 2}}}}
    store.init(8.0, 16, config=config)
    rng = np.random.default_rng(0)
    truth = rng.lognormal(8.0, 1.0, (16,) * 3).astype(np.float32)
    store.write("truth", truth)
    for name in FIELDS + HODS:
        store.write(name, (truth * rng.lognormal(0.0, 0.5, truth.shape)).astype(np.float32))
    models = {"hod_a_mean": {"rk_mean": 0.5}, "hod_b_mean": {"rk_mean": 0.7}}
    metrics = {"models": models, "bands": {"large": [0.0, 1.0]}, "k_max": 5.0}
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path / "run"


def test_network_figures_show_the_strongest_hod_and_the_reports_curves(tmp_path):
    figures = _figures_module().network_figures(_run(tmp_path))
    assert set(figures) == {"network_slices", "network_pk", "network_rk"}
    titles = [ax.get_title() for ax in figures["network_slices"].axes]
    assert "hod_b_mean" in titles and "hod_b_draw" in titles and "hod_a_mean" not in titles
    store = FieldStore(tmp_path / "run" / "evaluation" / "fields")
    truth = np.asarray(store.read("truth"))
    want = cross_power(np.asarray(store.read("hod_b_mean")), truth, 8.0, "CIC")
    keep = want.k <= 5.0
    (line,) = [x for x in figures["network_rk"].axes[0].lines if x.get_label() == "hod_b_mean"]
    np.testing.assert_allclose(line.get_xdata(), want.k[keep])
    np.testing.assert_allclose(line.get_ydata(), want.r[keep], rtol=1e-12)
