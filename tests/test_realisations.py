"""Realisations: the summary's structure, spreads and paired significances by hand; whole-box
scoring of repeated and different mock universes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from dm2gal.errors import ConfigError
from dm2gal.eval.aggregate import compare, markdown, summarise
from dm2gal.eval.evaluation import EvaluationSettings, score_realisations
from dm2gal.eval.realisations import evaluate_realisations, mock_realisations
from dm2gal.eval.report import ReportOptions
from dm2gal.hod import BinnedHOD
from dm2gal.io.catalog import CATALOGS_FILE, load_catalogs
from dm2gal.io.store import FieldStore
from dm2gal.sim import MockUniverse
from dm2gal.stats.bands import default_bands


def one(model_p: float, model_r: float, hod: list[tuple[float, float]], total: float) -> dict:
    """Scores of one realisation: a deterministic model and an HOD drawn len(hod) times."""
    return {
        "model": [{"pk_ratio_abs_err": model_p, "rk_mean": model_r, "total_mass_rel_err": total}],
        "hod_binned": [
            {"pk_ratio_abs_err": p, "rk_mean": r, "total_mass_rel_err": 0.1, "k_max": 3.0}
            for p, r in hod
        ],
    }


def test_summary_structure_and_spreads_by_hand():
    per = [
        one(0.1, 0.9, [(0.2, 0.8), (0.4, 0.6)], -0.05),
        one(0.3, 0.8, [(0.3, 0.7), (0.3, 0.7)], 0.05),
        one(0.2, 0.7, [(0.5, 0.5), (0.1, 0.9)], 0.0),
    ]
    s = summarise(per)
    assert set(s) == {"model", "hod_binned"}
    assert set(s["hod_binned"]) == {"pk_ratio_abs_err", "rk_mean", "total_mass_rel_err"}  # no k_max
    m = s["model"]["pk_ratio_abs_err"]
    assert set(m) == {"mean", "std", "values"}
    assert m["values"] == pytest.approx([0.1, 0.3, 0.2])
    assert m["mean"] == pytest.approx(0.2) and m["std"] == pytest.approx(0.1)  # ddof=1
    h = s["hod_binned"]["pk_ratio_abs_err"]
    assert h["values"] == pytest.approx([0.3, 0.3, 0.3]) and h["std"] == pytest.approx(0.0)
    np.testing.assert_allclose(h["draws"], [[0.2, 0.4], [0.3, 0.3], [0.5, 0.1]])
    # within-realisation std (ddof=1): 0.1414, 0, 0.2828 -> mean 0.1414
    assert h["draw_std"] == pytest.approx(math.sqrt(2) / 10)


def test_one_realisation_repeated_has_zero_std():
    per = [one(0.1, 0.9, [(0.2, 0.8), (0.4, 0.6)], 0.02)] * 3
    for field in summarise(per).values():
        for entry in field.values():
            assert entry["std"] == 0.0
    single = summarise(per[:1])
    assert single["model"]["rk_mean"]["std"] is None


def test_paired_significance_by_hand():
    per = [
        one(0.1, 0.75, [(0.2, 0.5)], -0.05),
        one(0.3, 0.5, [(0.5, 0.25)], 0.05),
        one(0.2, 0.25, [(0.3, 0.0)], 0.0),
    ]
    rows = {c.metric: c for c in compare(summarise(per), ["model"], ["hod_binned"])}
    # P err: model - hod = -0.1, -0.2, -0.1: mean -0.1333, std 0.05774, se 0.03333 -> +4.0 sigma
    p = rows["pk_ratio_abs_err"]
    assert (p.n, p.diff, p.error, p.sigma) == pytest.approx((3, -0.4 / 3, 0.1 / 3, 4.0))
    # r: +0.25 each time: no spread, the network better by +inf sigma
    assert rows["rk_mean"].sigma == math.inf
    # |total| 0.05, 0.05, 0 against 0.1: -0.05, -0.05, -0.1 -> mean -0.0667, se 0.01667: +4 sigma
    t = rows["total_mass_rel_err"]
    assert (t.diff, t.sigma) == pytest.approx((-0.2 / 3, 4.0))
    text = markdown(summarise(per), list(rows.values()), ["seed 1", "seed 2", "seed 3"])
    assert "| model | hod_binned | pk_ratio_abs_err | -0.1333 ± 0.033 | +4.0 | model |" in text
    assert "| pk_ratio_abs_err | 0.2 ± 0.1 | 0.3333 ± 0.15 |" in text


def test_compare_pairs_means_with_means_and_draws_with_draws():
    per = [
        {
            name: [{"rk_mean": r}]
            for name, r in (
                ("model_mean", 0.9),
                ("model_draw", 0.8),
                ("hod_a_mean", 0.85),
                ("hod_a_draw", 0.7),
            )
        }  # fmt: skip
    ] * 2
    pairs = {(c.network, c.reference) for c in compare(summarise(per), ["model_mean", "model_draw"],
                                                     ["hod_a_mean", "hod_a_draw"])}  # fmt: skip
    assert pairs == {("model_mean", "hod_a_mean"), ("model_draw", "hod_a_draw")}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no realisation"):
        summarise([])
    with pytest.raises(ValueError, match="'model'"):
        summarise([{"model": []}])
    uneven = summarise([one(0.1, 0.9, [(0.2, 0.8)], 0.0), {"model": one(0.1, 0.9, [], 0)["model"]}])
    with pytest.raises(ValueError, match="different realisations"):
        compare(uneven, ["model"], ["hod_binned"])


# -- whole boxes ---------------------------------------------------------------------------------
SMALL = {"box": 32.0, "particles": 32, "grid": 32, "seed": 5, "steps": 5}
OPTIONS = ReportOptions(k_pairs=((1.0, 1.2),), thetas=(0.5, 2.0), slice_width=2)


@pytest.fixture(scope="module")
def universes(tmp_path_factory):
    """Two 32^3 mock universes (seeds 5 and 6) and a binned HOD fitted on the first."""
    src = MockUniverse(**SMALL, cache_dir=tmp_path_factory.mktemp("real"))
    stores = [src.build(), src.realisation(6).build()]
    halos, galaxies = load_catalogs(stores[0].root / CATALOGS_FILE)
    hod = BinnedHOD().fit(halos, galaxies, lambda pos: np.zeros(len(pos), bool), src.box)
    return stores, {"binned": hod}


def dimmed_oracle(store: FieldStore) -> np.ndarray:
    """A stand-in network: 80% of the oracle mean (deterministic, the same for the same box)."""
    return (0.8 * store.read("oracle_mean", mmap=False)).astype(np.float32)


def test_one_box_repeated_gives_zero_std_and_the_full_structure(universes, tmp_path):
    (store, _), hods = universes
    summary = evaluate_realisations(
        [store, store], dimmed_oracle, "stellar", tmp_path, OPTIONS, hods=hods, hod_draws=2
    )
    assert json.loads((tmp_path / "realisations.json").read_text()) == summary
    boxes = json.loads((tmp_path / "realisations_boxes.json").read_text())
    assert boxes == [str(store.root.resolve())] * 2
    assert set(summary) == {
        "model", "hod_binned_mean", "hod_binned_draw", "oracle_mean", "oracle_draw"
    }  # fmt: skip
    bands = [b.name for b in default_bands(store.box, store.grid)]
    for field, metrics in summary.items():
        expected = {"pk_ratio_abs_err", "rk_mean", "total_mass_rel_err", "bk_ratio_abs_err"}
        expected |= {f"{m}_{b}" for m in ("rk_mean", "decorrelation_ratio") for b in bands}
        assert expected <= set(metrics), field
        for metric, entry in metrics.items():
            assert len(entry["values"]) == 2 and entry["values"][0] == entry["values"][1]
            assert entry["std"] == 0.0, (field, metric)
            assert entry["mean"] == entry["values"][0]
    # the HOD is drawn twice per box (different seeds): its draws differ, the boxes do not
    draws = summary["hod_binned_draw"]["pk_ratio_abs_err"]["draws"]
    assert draws[0] == draws[1] and draws[0][0] != draws[0][1]
    assert "draws" not in summary["hod_binned_mean"]["pk_ratio_abs_err"]  # the mean is one field
    # the stand-in network: total mass 20% below the oracle mean's
    total = summary["model"]["total_mass_rel_err"]["mean"]
    oracle = summary["oracle_mean"]["total_mass_rel_err"]["mean"]
    assert 1 + total == pytest.approx(0.8 * (1 + oracle), rel=1e-5)
    # each kind's decorrelation is relative to the oracle of its kind
    assert summary["oracle_mean"]["decorrelation_ratio_large"]["mean"] == 1.0
    assert summary["oracle_draw"]["decorrelation_ratio_large"]["mean"] == 1.0
    # the HOD's mean correlates better than its draws: means are compared with means only
    for b in bands:
        mean, draw = (summary[f"hod_binned_{k}"][f"rk_mean_{b}"]["mean"] for k in ("mean", "draw"))
        assert mean > draw
    text = (tmp_path / "realisations.md").read_text()
    assert "| model | hod_binned_mean | rk_mean |" in text and str(store.root) in text
    assert "| model | hod_binned_draw |" not in text
    for stem in ("pk", "rk", "pdf"):
        assert (tmp_path / "realisations" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_two_universes_spread_and_compare(universes, tmp_path):
    stores, hods = universes
    summary = evaluate_realisations(stores, dimmed_oracle, "stellar", tmp_path, OPTIONS, hods=hods)
    entry = summary["oracle_draw"]["pk_ratio_abs_err"]
    assert entry["std"] > 0 and entry["mean"] == pytest.approx(np.mean(entry["values"]))
    text = (tmp_path / "realisations.md").read_text()
    assert "sigma" in text and "| model | hod_binned_mean | pk_ratio_abs_err |" in text


def test_realisations_refuse_mismatched_boxes(universes, tmp_path):
    (store, _), _ = universes
    other = MockUniverse(**{**SMALL, "grid": 16}, cache_dir=tmp_path / "c").build()
    with pytest.raises(ValueError, match="must share"):
        evaluate_realisations([store, other], dimmed_oracle, "stellar", tmp_path, OPTIONS)
    with pytest.raises(ValueError, match="no target field 'nope'"):
        evaluate_realisations([store], dimmed_oracle, "nope", tmp_path, OPTIONS)
    with pytest.raises(ValueError, match="own seed"):
        mock_realisations(MockUniverse(**SMALL, cache_dir=tmp_path), 2, 4)
    with pytest.raises(ValueError, match="evaluation.stores"):
        mock_realisations(store, 1, 100)


def test_realisation_settings_are_checked():
    settings = EvaluationSettings.from_config({"realisations": 3, "stores": ["/a", "/b"]})
    assert (settings.realisations, settings.stores, settings.hod_draws) == (3, ("/a", "/b"), 3)
    for key, value in [("realisations", -1), ("hod_draws", 0), ("realisation_seed", 1.5)]:
        with pytest.raises(ValueError, match=f"evaluation.{key}"):
            EvaluationSettings.from_config({key: value})
    with pytest.raises(ValueError, match="evaluation.stores"):
        EvaluationSettings.from_config({"stores": "/a"})


def test_realisations_refuse_a_box_the_run_trained_on(universes, tmp_path):
    stores, _ = universes
    settings = EvaluationSettings.from_config({"stores": [str(stores[1].root)]})
    datamodule = SimpleNamespace(source=None, training_boxes=[stores[1]])
    with pytest.raises(ConfigError, match=rf"\['{stores[1].root}'\] are boxes the run trained on"):
        score_realisations(None, datamodule, tmp_path, settings, {}, seed=0)
