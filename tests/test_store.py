"""The field store: round trips, atomic writes, corruption detection, clear errors."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dm2gal.io.store import FieldStore, StoreError, atomic_write_text, config_hash, staged_dir
from dm2gal.sim.mock import MockUniverse


@pytest.fixture
def store(tmp_path: Path) -> FieldStore:
    s = FieldStore(tmp_path / "store")
    s.init(box=25.0, grid=8, source="test")
    return s


def test_write_read_round_trip_memory_mapped(store: FieldStore):
    field = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    store.write("dm", field, units="Msun/h")
    back = store.read("dm")
    assert isinstance(back, np.memmap)
    np.testing.assert_array_equal(back, field)
    assert store.fields() == ["dm"] and store.field_meta("dm")["units"] == "Msun/h"
    assert store.box == 25.0 and store.grid == 8 and store.verify() == []


def test_create_paints_in_place_and_failure_leaves_nothing(store: FieldStore):
    with store.create("stellar") as out:
        out[1, 2, 3] = 5.0
    assert store.read("stellar").sum() == 5.0
    with pytest.raises(RuntimeError, match="boom"), store.create("subhalo") as out:
        out[:] = 1.0
        raise RuntimeError("boom")
    assert "subhalo" not in store.fields()
    assert sorted(p.name for p in store.root.iterdir()) == ["meta.json", "stellar.npy"]


def test_verify_detects_a_corrupted_field(store: FieldStore):
    store.write("dm", np.ones((8, 8, 8), np.float32))
    raw = bytearray(store.path("dm").read_bytes())
    raw[-1] ^= 0xFF
    store.path("dm").write_bytes(bytes(raw))
    assert store.verify() == ["dm"]


@pytest.mark.parametrize(
    ("array", "message"),
    [(np.ones((8, 8, 4), np.float32), "shape"), (np.full((8, 8, 8), np.nan, np.float32), "finite")],
)
def test_bad_fields_are_refused(store: FieldStore, array: np.ndarray, message: str):
    with pytest.raises(StoreError, match=message):
        store.write("dm", array)
    assert "dm" not in store.fields() and not store.path("dm").exists()


def test_missing_store_and_field_name_the_path(tmp_path: Path, store: FieldStore):
    with pytest.raises(StoreError, match="meta.json"):
        FieldStore(tmp_path / "nowhere").meta()
    with pytest.raises(StoreError, match="no field 'gas'"):
        store.read("gas")
    with pytest.raises(ValueError, match="box"):
        FieldStore(tmp_path / "x").init(box=0, grid=8)


def test_atomic_text_has_normal_permissions(tmp_path: Path):
    atomic_write_text(tmp_path / "a.json", "{}")
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode & 0o044 == 0o044  # group/other readable like any file written with open()


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_staged_dir_replaces_the_target_only_when_complete(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(target) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("crash")
    assert (target / "a").read_text() == "old"
    with staged_dir(target) as tmp:
        (tmp / "a").write_text("new")
    assert (target / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no staging or old dir left


def test_staged_dir_keeps_a_target_another_process_finished(tmp_path):
    target = tmp_path / "store"
    with staged_dir(target, keep=lambda root: (root / "a").is_file()) as tmp:
        (tmp / "a").write_text("mine")
        target.mkdir()
        (target / "a").write_text("theirs")
    assert (target / "a").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_staging_left_by_a_killed_build_is_removed_by_the_next(tmp_path: Path):
    target = tmp_path / "store"
    code = (
        "import os, signal\n"
        "from dm2gal.io.store import staged_dir\n"
        f"with staged_dir({str(target)!r}) as staging:\n"
        "    (staging / 'catalogs.h5').write_bytes(bytes(367_000))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (orphan,) = tmp_path.glob(".store.*.tmp")
    assert (orphan / "catalogs.h5").stat().st_size == 367_000
    dead = orphan.with_suffix(".owner").read_text().split()[0]
    # a build of this (live) process, one of another host, one without an owner file, and
    # the moved-aside old store of the killed build
    host = socket.gethostname()
    for name, owner in (("live", f"{os.getpid()} {host}"), ("other", f"{dead} elsewhere"),
                        ("unowned", None), ("dead", f"{dead} {host}")):  # fmt: skip
        (tmp_path / f".store.{name}.{'old' if name == 'dead' else 'tmp'}").mkdir()
        if owner:
            (tmp_path / f".store.{name}.owner").write_text(owner)

    with staged_dir(target) as staging:
        (staging / "meta.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".store.live.owner",
        ".store.live.tmp",
        ".store.other.owner",
        ".store.other.tmp",
        ".store.unowned.tmp",
        "store",
    ]
    assert [p.name for p in target.iterdir()] == ["meta.json"]


def _build_mock(cache_dir: str, barrier) -> None:
    barrier.wait()  # both start building at the same moment
    MockUniverse(box=32.0, particles=16, grid=16, seed=3, cache_dir=cache_dir).build()


def test_two_processes_building_the_same_mock_at_once_leave_one_store(tmp_path: Path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    builds = [context.Process(target=_build_mock, args=(str(tmp_path), barrier)) for _ in "ab"]
    for build in builds:
        build.start()
    for build in builds:
        build.join(timeout=300)
    assert [build.exitcode for build in builds] == [0, 0]
    mock = MockUniverse(box=32.0, particles=16, grid=16, seed=3, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [mock.hash]  # no staging left
    assert mock.cache_problem() is None  # complete, every hash right
