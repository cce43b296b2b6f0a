"""Quantile calibration: recovers monotone maps, matches PDFs, keeps empty voxels empty, and is
fitted on training-region voxels only."""

from __future__ import annotations

import numpy as np
import pytest

from dm2gal.data.regions import Region
from dm2gal.data.splits import make_splits
from dm2gal.infer.calibration import (
    QuantileMap,
    calibrate_store_field,
    fit_calibration,
    training_slabs,
)
from dm2gal.io.store import FieldStore


def test_recovers_a_monotone_map():
    """Predictions p and truths 3 p^2 of the same voxels: the map is y = 3 x^2 inside the range."""
    rng = np.random.default_rng(0)
    pred = rng.lognormal(20.0, 1.0, 200_000)
    calibrate = QuantileMap.fit(pred, 3.0 * pred**2)
    x = np.quantile(pred, [0.01, 0.1, 0.5, 0.9, 0.99])
    np.testing.assert_allclose(calibrate(x), 3.0 * x**2, rtol=2e-3)


def test_matches_the_true_pdf_and_total_mass():
    """Independent lognormal samples: after calibration a fresh prediction sample has the true
    sample's quantiles and mean (a log regression's compressed, low-mean output restored)."""
    rng = np.random.default_rng(1)
    pred = rng.lognormal(9.0, 0.5, 400_000)  # compressed and low, as a log-MSE network gives
    true = rng.lognormal(9.5, 1.0, 400_000)
    calibrate = QuantileMap.fit(pred, true)
    fresh = calibrate(rng.lognormal(9.0, 0.5, 400_000))
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    np.testing.assert_allclose(np.quantile(fresh, levels), np.quantile(true, levels), rtol=0.02)
    assert fresh.mean() == pytest.approx(true.mean(), rel=0.02)
    # the analytic map between the two lognormals: ln y = 9.5 + (ln x - 9.0) * 1.0 / 0.5
    x = np.exp(9.0 + np.array([-0.5, 0.0, 0.5]))
    np.testing.assert_allclose(calibrate(x), np.exp(9.5 + 2.0 * (np.log(x) - 9.0)), rtol=0.02)


def test_empty_voxels_stay_empty_and_the_occupied_fraction_follows_the_truth():
    """90% of predicted voxels empty, 95% of true ones: empty stays empty and the faintest
    predicted galaxies become empty, so 5% of voxels are occupied after calibration."""
    rng = np.random.default_rng(2)
    n = 200_000
    pred = np.where(rng.random(n) < 0.9, 0.0, rng.lognormal(8.0, 1.0, n))
    true = np.where(rng.random(n) < 0.95, 0.0, rng.lognormal(10.0, 1.0, n))
    calibrate = QuantileMap.fit(pred, true)
    out = calibrate(pred)
    assert out.dtype == np.float32 and (out[pred <= 0] == 0).all()
    assert (out > 0).mean() == pytest.approx(0.05, abs=0.003)
    assert calibrate(np.array([-1.0, 0.0]))[0] == 0.0


@pytest.mark.parametrize(
    ("predicted", "true", "match"),
    [
        (np.array([]), np.ones(3), "no training-region voxels"),
        (np.array([1.0, np.nan]), np.ones(3), "finite"),
    ],
)
def test_bad_samples_raise(predicted, true, match):
    with pytest.raises(ValueError, match=f"calibration: .*{match}"):
        QuantileMap.fit(predicted, true)


def test_slabs_are_evenly_spaced_and_bounded():
    splits = make_splits(16, preset=None, test=[0, 4], val=[8, 12])
    assert [s.start[0] for s in training_slabs(splits, 4, 2 * 4 * 16 * 16)] == [0, 8]
    assert [s.start[0] for s in training_slabs(splits, 4, 10**9)] == [0, 4, 8, 12]
    (one,) = training_slabs(splits, 4, 1)
    assert one.size == (4, 16, 16)
    with pytest.raises(ValueError, match="evaluation.calibration_voxels must be integers >= 1"):
        training_slabs(splits, 4, -5)


def test_fitted_on_training_voxels_only():
    """With a perfect prediction the map is the identity on training values, and changing the
    held-out target (test, val and their guard band) changes nothing."""
    grid = 16
    rng = np.random.default_rng(3)
    target = rng.lognormal(10.0, 1.0, (grid,) * 3).astype(np.float32)
    splits = make_splits(grid, preset=None, test=[0, 5], val=[8, 12], guard=1)

    def fit(field: np.ndarray) -> QuantileMap:
        def predict(where: Region) -> np.ndarray:
            x0 = where.start[0]
            return target[x0 : x0 + where.size[0]]  # the undisturbed truth

        return fit_calibration(predict, field, splits, thickness=4)

    clean = fit(target)
    x = np.quantile(target[splits.train_mask], [0.02, 0.5, 0.98])
    np.testing.assert_allclose(clean(x), x, rtol=1e-5)
    disturbed = target.copy()
    disturbed[~splits.train_mask] *= 100.0
    again = fit(disturbed)
    np.testing.assert_array_equal(again.predicted, clean.predicted)
    np.testing.assert_array_equal(again.true, clean.true)


def test_saved_table_round_trips_and_calibrates_a_stored_field(tmp_path):
    rng = np.random.default_rng(4)
    calibrate = QuantileMap.fit(rng.lognormal(9.0, 0.5, 10_000), rng.lognormal(9.5, 1.0, 10_000))
    calibrate.save(tmp_path / "calibration.csv")
    loaded = QuantileMap.load(tmp_path / "calibration.csv")
    np.testing.assert_array_equal(loaded.predicted, calibrate.predicted)
    np.testing.assert_array_equal(loaded.true, calibrate.true)

    store = FieldStore(tmp_path / "store")
    store.init(10.0, 8)
    field = rng.lognormal(9.0, 0.5, (8, 8, 8)).astype(np.float32)
    store.write("stellar", field)
    calibrate_store_field(store, "stellar", loaded, "stellar_calibrated", calibration="c.csv")
    np.testing.assert_array_equal(store.read("stellar_calibrated"), calibrate(field))
    assert store.field_meta("stellar_calibrated")["calibration"] == "c.csv"

    (tmp_path / "bad.csv").write_text("1,2\n1,3\n")
    with pytest.raises(ValueError, match="bad.csv: expected two columns with increasing"):
        QuantileMap.load(tmp_path / "bad.csv")
