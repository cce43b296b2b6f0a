"""The one integer-option check, and user input that used to raise a plain ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from dm2gal.cli import user_error
from dm2gal.errors import ConfigError, integer_option
from dm2gal.train.build import build


@pytest.mark.parametrize(
    ("value", "minimum", "expected"),
    [(3, 1, 3), (2.0, 1, 2), (np.int64(4), 0, 4), (0, 0, 0)],
)
def test_integer_option_accepts_integers(value, minimum: int, expected: int):
    result = integer_option(value, "data.crop", minimum)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [True, "3", 2.5, -1, None, float("nan")])
def test_integer_option_names_the_key(value):
    with pytest.raises(ConfigError, match=r"^data\.splits\.guard: expected an integer >= 0, got "):
        integer_option(value, "data.splits.guard", 0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.family=cauchy", "model.family: expected one of ('normal', 'gumbel'), got 'cauchy'"),
        ("model.components=0", "model.components: expected an integer >= 1, got 0"),
        ("model.min_occupancy=1.5", "model.min_occupancy: expected a probability in [0, 1)"),
        ("data.stride=0.5", "data.stride: expected an integer >= 1, got 0.5"),
        ("data.source.steps=100", "data.source.steps / data.source.pm_factor: "),
        ("data.source.particles=8.5", "data.source.particles: expected an integer >= 2, got 8.5"),
    ],
)
def test_bad_model_and_data_options_are_user_errors(compose, override: str, message: str):
    """Raised inside Hydra's instantiate, they still reach the command as one ``error:`` line."""
    with pytest.raises(Exception) as err:
        build(compose([override, "model=probabilistic"]))
    found = user_error(err.value)
    assert isinstance(found, ConfigError) and str(found).startswith(message)
