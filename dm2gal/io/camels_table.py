"""CAMELS' parameter tables: one row per simulation of a set (``LH_0``, ``1P_p1_n1``, ...).

CAMELS distributes them beside the simulations, e.g.
``CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt``::

    #Name  Omega_m  sigma_8  A_SN1     A_AGN1  A_SN2  A_AGN2  seed
      LH_0 0.30900 0.97900   3.11234   1.12194 0.66850 0.53182 0

(whitespace-separated; the header names the columns; the last column is the initial-condition
seed). Cosmology columns take dm2gal's names (``Omega_m`` -> ``Om0``, ``sigma_8`` ->
``sigma8``); the feedback columns keep theirs. The file is parsed here rather than with
``numpy.loadtxt`` so that a bad row is reported with its file and line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from dm2gal.errors import UserError

#: CAMELS column -> dm2gal parameter name (dm2gal.sim.cosmology.Cosmology's keys)
RENAMED = {"Omega_m": "Om0", "sigma_8": "sigma8"}
NAME_COLUMN, SEED_COLUMN = "Name", "seed"


class CamelsTableError(UserError, ValueError):
    """A CAMELS parameter table is missing, malformed or lacks a simulation."""


@dataclass(frozen=True)
class CamelsRow:
    """One simulation of a CAMELS set: its ``name`` (its folder), its ``parameters`` (name ->
    value, in the table's column order) and its initial-condition ``seed``."""

    name: str
    parameters: dict[str, float]
    seed: int


def _header(path: Path, line: str) -> list[str]:
    columns = line.lstrip("#").split()
    if len(columns) < 3 or columns[0] != NAME_COLUMN or columns[-1] != SEED_COLUMN:
        raise CamelsTableError(
            f"{path}:1: expected a header '#{NAME_COLUMN} <parameters...> {SEED_COLUMN}', "
            f"got {line.strip()!r}"
        )
    return [RENAMED.get(c, c) for c in columns[1:-1]]


def _row(path: Path, number: int, line: str, names: list[str]) -> CamelsRow:
    cells = line.split()
    where = f"{path}:{number}"
    if len(cells) != len(names) + 2:
        raise CamelsTableError(
            f"{where}: expected {len(names) + 2} columns (name, {', '.join(names)}, seed), "
            f"got {len(cells)}: {line.strip()!r}"
        )
    try:
        values = [float(c) for c in cells[1:-1]]
        seed = int(cells[-1])
    except ValueError as err:
        raise CamelsTableError(f"{where}: expected numbers and an integer seed: {err}") from err
    bad = [n for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise CamelsTableError(f"{where}: non-finite values of {bad}")
    return CamelsRow(cells[0], dict(zip(names, values, strict=True)), seed)


def read_camels_table(path: str | Path) -> dict[str, CamelsRow]:
    """The rows of a CAMELS parameter table by simulation name, in file order."""
    path = Path(path)
    if not path.is_file():
        raise CamelsTableError(f"{path}: CAMELS parameter table not found")
    lines = path.read_text().splitlines()
    if not lines:
        raise CamelsTableError(f"{path}: empty file, expected a CAMELS parameter table")
    names = _header(path, lines[0])
    rows: dict[str, CamelsRow] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = _row(path, number, line, names)
        if row.name in rows:
            raise CamelsTableError(f"{path}:{number}: simulation {row.name!r} listed twice")
        rows[row.name] = row
    return rows


def camels_rows(path: str | Path, names: list[str]) -> list[CamelsRow]:
    """The rows of the simulations ``names`` (in that order) from the table at ``path``."""
    rows = read_camels_table(path)
    missing = [name for name in names if name not in rows]
    if missing:
        raise CamelsTableError(
            f"{path}: no rows for the simulations {missing} (it lists {len(rows)}, e.g. "
            f"{list(rows)[:3]})"
        )
    return [rows[name] for name in names]
