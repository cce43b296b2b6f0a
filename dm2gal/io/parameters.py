"""A universe's parameters (cosmology and galaxy physics) in its field store's metadata.

A store built for one point of a parameter space (a Latin-hypercube mock universe, a CAMELS
``LH_i`` simulation) records ``attrs.parameters`` (name -> float) and ``attrs.parameter_names``
(their order: the metadata file is written with sorted keys). Single-universe stores record
neither and have no parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dm2gal.io.store import FieldStore, StoreError

PARAMETERS_KEY = "parameters"
PARAMETER_NAMES_KEY = "parameter_names"


def parameter_attrs(parameters: Mapping[str, float]) -> dict[str, Any]:
    """The store attributes that record ``parameters`` (in their order); empty for none."""
    if not parameters:
        return {}
    return {
        PARAMETERS_KEY: {name: float(value) for name, value in parameters.items()},
        PARAMETER_NAMES_KEY: list(parameters),
    }


def read_parameters(store: FieldStore) -> dict[str, float]:
    """The parameters ``store`` records, in their recorded order; ``{}`` when it records none.

    Raises :class:`StoreError` naming the file when the two keys disagree or a value is not a
    finite number."""
    attrs = store.meta().get("attrs", {})
    values, names = attrs.get(PARAMETERS_KEY), attrs.get(PARAMETER_NAMES_KEY)
    if values is None and names is None:
        return {}
    where = f"{store.meta_path}: attrs.{PARAMETERS_KEY}"
    if not isinstance(values, dict) or not isinstance(names, list) or set(names) != set(values):
        raise StoreError(
            f"{where} and attrs.{PARAMETER_NAMES_KEY}: expected an object name -> number and the "
            f"list of its names, got {values!r} and {names!r}"
        )
    out = {}
    for name in names:
        value = values[name]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise StoreError(f"{where}.{name}: expected a finite number, got {value!r}")
        out[name] = float(value)
    return out
