"""CIC painting: whole (``paint``) and streamed into a store field (``paint_field``)."""

from __future__ import annotations

import MAS_library as masl
import numpy as np
import pytest

from dm2gal.io.paint import paint, paint_chunks, paint_field
from dm2gal.io.store import FieldStore

GRID, BOX = 16, 10.0


def _particles(n=5000, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(-2, 12, (n, 3)), rng.uniform(1e9, 1e10, n)


def _pylians(pos, mass):
    out = np.zeros((GRID,) * 3, np.float32)
    pos32 = np.mod(pos, BOX).astype(np.float32)
    masl.MA(pos32, out, BOX, "CIC", W=mass.astype(np.float32), verbose=False)
    return out


def test_paint_matches_pylians_and_conserves_mass():
    pos, mass = _particles()
    field = paint(pos, mass, GRID, BOX)
    np.testing.assert_allclose(field, _pylians(pos, mass), rtol=1e-6, atol=1e3)
    assert field.sum(dtype=np.float64) == pytest.approx(mass.sum(), rel=1e-6)


def test_paint_single_particle_cic_weights():
    # Pylians puts cell i at x = i * dx: a particle at (3.5, 3.5, 3.5) dx sits between cells
    # 3 and 0 (periodic) on each axis and splits its mass equally over 8 cells
    field = paint(np.array([[3.5, 3.5, 3.5]]), 8.0, 4, 4.0)
    assert field[0, 0, 0] == pytest.approx(1.0)
    assert field[3, 3, 3] == pytest.approx(1.0)
    assert field[0, 3, 0] == pytest.approx(1.0)
    assert np.count_nonzero(field) == 8
    assert paint(np.array([[4.0, 0.0, 8.0]]), 8.0, 4, 4.0)[0, 0, 0] == pytest.approx(8.0)


def test_streamed_chunks_equal_one_call():
    pos, mass = _particles()
    out = np.zeros((GRID,) * 3, np.float32)
    parts = [(pos[a:b], mass[a:b]) for a, b in ((0, 1000), (1000, 1000), (1000, 5000))]
    total, count = paint_chunks(parts, out, BOX, progress=False)
    assert count == 5000
    assert total == pytest.approx(mass.sum(), rel=1e-12)
    np.testing.assert_allclose(out, _pylians(pos, mass), rtol=1e-5, atol=1e3)


def test_paint_field_into_store(tmp_path):
    pos, _ = _particles()
    store = FieldStore(tmp_path / "s")
    store.init(BOX, GRID)
    chunks = [(pos[:2500], 3e9), (pos[2500:], 3e9)]  # one mass for all (MassTable)
    total, _ = paint_field(store, "dm", iter(chunks), n_chunks=2, progress=False, origin="test")
    assert total == pytest.approx(5000 * 3e9)
    field = store.read("dm")
    assert isinstance(field, np.memmap)
    assert field.sum(dtype=np.float64) == pytest.approx(total, rel=1e-6)
    np.testing.assert_allclose(field, _pylians(pos, np.full(5000, 3e9)), rtol=1e-5, atol=1e3)
    assert store.field_meta("dm")["mas"] == "CIC"
    assert store.verify() == []


def test_paint_field_failure_leaves_nothing(tmp_path):
    store = FieldStore(tmp_path / "s")
    store.init(BOX, GRID)

    def chunks():
        yield np.zeros((3, 3)), 1.0
        yield np.full((3, 3), np.inf), 1.0

    with pytest.raises(ValueError, match="non-finite"):
        paint_field(store, "dm", chunks(), progress=False)
    assert store.fields() == []
    assert sorted(p.name for p in store.root.iterdir()) == ["meta.json"]


def test_bad_mas_is_an_error_not_an_exit(tmp_path):
    store = FieldStore(tmp_path / "s")
    store.init(BOX, GRID)
    with pytest.raises(ValueError, match="mas must be one of"):
        paint_field(store, "dm", [], mas="XYZ", progress=False)
