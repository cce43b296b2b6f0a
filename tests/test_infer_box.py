"""A whole-box prediction's options: draw seeds, field names, tile and batch from the run's
settings, the calibration table, and the checks of the prediction options."""

from __future__ import annotations

from pathlib import Path

import pytest

from dm2gal.errors import ConfigError
from dm2gal.infer.box import BoxRequest, run_options
from dm2gal.infer.naming import PredictionNames, draw_seeds
from dm2gal.infer.predict import PredictOptions
from dm2gal.models import PaperNet, UNet3d


def _request(**changes) -> BoxRequest:
    options = dict(out=None, name="stellar", samples=0, seed=0, tile=None, batch_size=None)
    return BoxRequest(**{**options, "calibration": None, **changes})


def test_draws_are_seeded_from_seed_on_and_named_after_the_prediction():
    assert draw_seeds(5, 3) == [5, 6, 7] and draw_seeds(5, 0) == []
    names = PredictionNames("stellar", 2)
    assert names.mean == "stellar_mean" and names.draws == ["stellar_draw_0", "stellar_draw_1"]
    assert names.calibrated == "stellar_mean_calibrated"
    alone = PredictionNames("stellar")
    assert (alone.mean, alone.draws, alone.calibrated) == ("stellar", [], "stellar_calibrated")
    request = _request(samples=2.0, seed=3)
    assert request.seeds == [3, 4] and request.names == names


@pytest.mark.parametrize(
    ("changes", "key"), [({"samples": -1}, "samples"), ({"samples": 1.5}, "samples"),
                         ({"seed": "1"}, "seed"), ({"samples": True}, "samples")],
)  # fmt: skip
def test_a_bad_number_of_draws_or_seed_is_one_user_error(changes, key):
    with pytest.raises(ConfigError, match=rf"^{key}: expected an integer >= 0"):
        _request(**changes)


def test_tile_explicit_must_be_valid_the_runs_own_is_rounded():
    unet = UNet3d(2, 1, 2, levels=2, convs=1)  # valid sides n % 4 == 2
    assert run_options(unet, {"tile": 8}, False).tile == 6  # the run's setting, rounded down
    assert run_options(unet, {}, False).tile == 30  # DEFAULT_TILE (32), rounded down
    assert run_options(unet, {"tile": 8}, False, tile=10).tile == 10
    with pytest.raises(ConfigError, match="does not take outputs of 8 voxels"):
        run_options(unet, {}, False, tile=8)
    assert run_options(PaperNet(in_channels=2, channels=1), {"tile": 32}, True).tile == 1
    options = run_options(unet, {"batch_size": 7}, True)
    assert (options.batch_size, options.channels_last) == (7, True)
    assert run_options(unet, {"batch_size": 7}, True, batch_size=2).batch_size == 2
    assert run_options(unet, {}, True).batch_size == PredictOptions().batch_size


def test_calibration_table_asked_for_else_the_runs_when_present(tmp_path: Path):
    assert _request().calibration_table(tmp_path) is None
    table = tmp_path / "evaluation" / "calibration.csv"
    table.parent.mkdir()
    table.write_text("predicted,true\n")
    assert _request().calibration_table(tmp_path) == table
    assert _request(calibration="/x/c.csv").calibration_table(tmp_path) == Path("/x/c.csv")


@pytest.mark.parametrize("key", ["tile", "batch_size", "chunk_voxels", "read_threads"])
def test_prediction_options_are_integers_from_one(key):
    assert getattr(PredictOptions(**{key: 3.0}), key) == 3
    with pytest.raises(ConfigError, match=rf"^{key}: expected an integer >= 1, got 0"):
        PredictOptions(**{key: 0})
