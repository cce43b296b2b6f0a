"""Writes that fail for space or permission: one line naming the path (and the bytes needed and
free), a free-space check before a large store starts, and nothing half-written. The space is
made short by a patched ``shutil.disk_usage``, or for real on a small tmpfs (root only)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT

from dm2gal.data.transforms import FieldTransform
from dm2gal.infer.predict import PredictOptions, predict_store
from dm2gal.io import store as store_module
from dm2gal.io.sources import ArraySource
from dm2gal.io.store import (
    DiskError,
    FieldStore,
    atomic_path,
    atomic_write_text,
    field_bytes,
    reports_write_errors,
    require_free_space,
)
from dm2gal.models import UNet3d
from dm2gal.sim.mock import MockUniverse
from dm2gal.train.checkpoints import ProjectCheckpointIO

Usage = namedtuple("Usage", "total used free")
GRID = 16


def _mount_tmpfs(where: Path, options: str) -> Path:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)])
    if mounted.returncode != 0:
        pytest.skip("this machine does not let root mount a tmpfs")
    return where


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs."""
    yield _mount_tmpfs(tmp_path / "disk", "size=256k")
    subprocess.run(["umount", str(tmp_path / "disk")], check=True)


@pytest.fixture
def read_only_disk(tmp_path: Path):
    yield _mount_tmpfs(tmp_path / "ro", "ro,size=64k")
    subprocess.run(["umount", str(tmp_path / "ro")], check=True)


@pytest.fixture
def free(monkeypatch):
    """``free(n)``: from now on every disk has ``n`` bytes free."""

    def set_free(n: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - n, n))

    return set_free


def _arrays(tmp_path: Path) -> ArraySource:
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("dm", "subhalo", "stellar"):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], rng.random((GRID,) * 3, dtype=np.float32))
    return ArraySource(**paths, box=10.0, store_dir=tmp_path / "data" / "store")


def test_field_bytes_is_the_npy_file_size(tmp_path: Path):
    np.save(tmp_path / "f.npy", np.zeros((GRID,) * 3, np.float32))
    assert field_bytes(GRID, 3) == 3 * (tmp_path / "f.npy").stat().st_size


def test_a_store_too_large_for_the_disk_stops_before_it_starts(tmp_path, free):
    source = _arrays(tmp_path)
    needed = field_bytes(GRID, 3)
    free(needed - 1)
    with pytest.raises(DiskError) as raised:
        source.build()
    assert str(raised.value) == (
        f"{source.store_dir}: writing it needs {needed / 1024:.1f} KiB, only "
        f"{(needed - 1) / 1024:.1f} KiB free on its disk; free some space or write it elsewhere"
    )
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
    free(needed)
    assert FieldStore(source.build().root).verify() == []


@pytest.mark.parametrize("how", ["write", "create"])
def test_a_field_too_large_for_the_disk_names_it(tmp_path, free, how):
    store = FieldStore(tmp_path / "store")
    store.init(box=10.0, grid=GRID)
    free(field_bytes(GRID) - 1)
    with pytest.raises(
        DiskError, match=rf"^{store.path('dm')}: field 'dm' \(16\^3\) needs 16.1 KiB"
    ):
        if how == "write":
            store.write("dm", np.zeros((GRID,) * 3, np.float32))
        else:
            with store.create("dm"):
                pass
    assert store.fields() == [] and sorted(p.name for p in store.root.iterdir()) == ["meta.json"]


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(small_disk: Path):
    target = small_disk / "report.json"
    with pytest.raises(DiskError) as raised:
        atomic_write_text(target, "x" * 2**20)
    assert str(raised.value).startswith(f"{target}: cannot write it: no space left on its disk (")
    assert list(small_disk.iterdir()) == []


@pytest.mark.parametrize("how", ["write", "create"])
def test_a_disk_filling_during_a_field_write_is_caught(small_disk, monkeypatch, how):
    """Past the free-space check (another writer took the space): numpy's short write, or the
    reservation of a memory-mapped field's blocks (a SIGBUS crash without it)."""
    monkeypatch.setattr(store_module, "require_free_space", lambda *args: None)
    store = FieldStore(small_disk / "store")
    store.init(box=10.0, grid=64)  # 1 MiB per field, on a 256 KiB disk
    with pytest.raises(DiskError, match=rf"^{store.path('dm')}: cannot write it: no space left"):
        if how == "write":
            store.write("dm", np.ones((64,) * 3, np.float32))
        else:
            with store.create("dm") as out:
                out[:] = 1.0
    assert sorted(p.name for p in store.root.iterdir()) == ["meta.json"]


def test_a_store_on_a_read_only_disk_names_it(tmp_path, read_only_disk):
    source = _arrays(tmp_path)
    source.store_dir = read_only_disk / "store"
    with pytest.raises(DiskError) as raised:
        source.build()
    assert str(raised.value) == (
        f"{source.store_dir}: cannot write it: read-only file system; choose a directory you "
        "may write to"
    )


def test_an_input_that_cannot_be_read_is_not_a_write_error(tmp_path: Path):
    unreadable = PermissionError(errno.EACCES, "Permission denied", "/elsewhere/input.npy")
    with pytest.raises(PermissionError), reports_write_errors(tmp_path / "out" / "f.npy"):
        raise unreadable


def test_require_free_space_looks_at_the_nearest_existing_parent(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: seen.append(p) or Usage(10, 0, 10))
    require_free_space(tmp_path / "a" / "b" / "c.npy", 10, "a field")
    assert seen == [tmp_path]


def test_the_fields_command_prints_one_line(tmp_path: Path, read_only_disk: Path):
    source = _arrays(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dm2gal.fields",
            "data=fields",
            *(f"data.{name}={path}" for name, path in source.paths.items()),
            "data.box=10",
            f"paths.data_dir={read_only_disk}",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {read_only_disk}")
    assert "read-only file system" in line


def test_a_mock_larger_than_its_disk_stops_before_generating(small_disk: Path):
    mock = MockUniverse(box=32.0, particles=16, grid=32, seed=3, cache_dir=small_disk)
    needed = field_bytes(32, 5)  # dm, subhalo, stellar and the two oracle fields
    with pytest.raises(DiskError, match=rf"^{mock.store_dir}: writing it needs "):
        mock.build()
    assert mock.store_bytes() == needed > shutil.disk_usage(small_disk).free
    assert list(small_disk.iterdir()) == []


def test_a_directory_that_cannot_be_made_is_named(read_only_disk: Path):
    with pytest.raises(DiskError) as raised:
        atomic_write_text(read_only_disk / "reports" / "metrics.json", "{}")
    assert str(raised.value) == (
        f"{read_only_disk / 'reports' / 'metrics.json'}: cannot write it: read-only file system "
        f"({read_only_disk / 'reports'}); choose a directory you may write to"
    )


def test_a_checkpoint_that_cannot_be_written_names_it(read_only_disk: Path):
    path = read_only_disk / "checkpoints" / "last.ckpt"
    with pytest.raises(DiskError, match=rf"^{path}: cannot write it: read-only file system"):
        ProjectCheckpointIO().save_checkpoint({"state_dict": {}}, path)


def test_a_prediction_too_large_for_the_disk_stops_before_predicting(tmp_path, free):
    source = FieldStore(tmp_path / "sim")
    source.init(10.0, GRID)
    rng = np.random.default_rng(1)
    for name in ("dm", "subhalo"):
        source.write(name, rng.lognormal(20.0, 1.0, (GRID,) * 3).astype(np.float32))
    transform = FieldTransform([20.0 / np.log(10)] * 2, [1.0, 1.0], 9.0, 0.5)
    net = UNet3d(in_channels=2, channels=3, levels=1, convs=1).eval()
    calls = []
    net.register_forward_hook(lambda *args: calls.append(1))
    free(field_bytes(GRID) - 1)
    out = tmp_path / "prediction"
    with pytest.raises(DiskError, match=rf"^{out}: the prediction \(1 x 16\^3 voxels\) needs"):
        predict_store(net, transform, source, ["dm", "subhalo"], out, "stellar",
                      options=PredictOptions(tile=8, progress=False))  # fmt: skip
    assert calls == [] and FieldStore(out).fields() == []


def test_a_catalogue_on_a_full_disk_is_one_line(small_disk: Path):
    """h5py's failed write (a galaxy or halo catalogue) is reported like any other."""
    path = small_disk / "catalogs.h5"
    full = rf"^{path}: cannot write it: no space left on its disk"
    with pytest.raises(DiskError, match=full), atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["mstar"] = np.ones(2**20)  # 8 MiB on a 256 KiB disk
    assert list(small_disk.iterdir()) == []
