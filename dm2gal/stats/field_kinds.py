"""A scored field is a mean or a draw, and like is only compared with like; the network's
field quoted as a run's result.

A mean field (the expectation of a model given the gravity-only run: a deterministic network's
``model``, its calibration ``model_calibrated``, a probabilistic network's ``model_mean``, each
HOD's ``hod_<name>_mean``, the mock's ``oracle_mean``) always has the higher r(k) and too little
power; a draw (``model_draw``, ``hod_<name>_draw``, ``oracle_draw``) has the truth's kind of
scatter. A margin between a mean and a draw measures the difference of kinds, not of models.
"""

from __future__ import annotations

from collections.abc import Iterable

#: the network field quoted as a run's result, the first of these the evaluation has: a
#: probabilistic network's mean (its conditional expectation, the best r(k) it can give), else
#: the calibrated regression (a raw log-mass regression compresses the bright end and misses
#: the total mass), else the raw one
HEADLINE_FIELDS = ("model_mean", "model_calibrated", "model")
#: the suffix naming a random field (every other field is a mean)
DRAW_SUFFIX = "_draw"
#: separates a random field's name from its draw number while measuring (``model_draw#2``)
DRAW_INDEX = "#"


def is_draw(field: str) -> bool:
    """Whether ``field`` (or one numbered draw of it, ``name#i``) is a random draw."""
    return field.partition(DRAW_INDEX)[0].endswith(DRAW_SUFFIX)


def kind(field: str) -> str:
    """``"draw"`` or ``"mean"``."""
    return "draw" if is_draw(field) else "mean"


def same_kind(a: str, b: str) -> bool:
    """Whether fields ``a`` and ``b`` may be compared: both means or both draws."""
    return is_draw(a) == is_draw(b)


def headline_field(fields: Iterable[str]) -> str | None:
    """The first of :data:`HEADLINE_FIELDS` among ``fields``, else None."""
    fields = set(fields)
    return next((name for name in HEADLINE_FIELDS if name in fields), None)
