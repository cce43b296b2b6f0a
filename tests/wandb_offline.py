"""Read an offline W&B run back from its files: what ``wandb sync`` would upload.

wandb 0.31 has no Python reader for its transaction log (the Go ``wandb-core`` owns it), so
:func:`records` parses the ``.wandb`` file: a 7-byte ``:W&B`` header, then LevelDB-log chunks
(crc32, little-endian length, type 1 full / 2 first / 3 middle / 4 last) that never straddle a
32 KiB block, each record a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` transaction log, in order."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, buf = Path(path).read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


@dataclass
class OfflineRun:
    """An offline run as written: run metadata, config, every history row and the final summary
    (nested keys joined by '/': a logged table is ``<key>/_type``, ``<key>/path``, ...), and
    the logged tables read from their files (``{key: {"columns": [...], "data": [[...]]}}``,
    the last one per key)."""

    group: str = ""
    id: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


def _path_key(item: Any) -> str:
    """A history / summary item's key (nested keys joined by '/')."""
    return item.key or "/".join(item.nested_key)


def finished_records(path: Path, wait_s: float = 60.0) -> list[Any]:
    """The records of a finished run's log: ``run.finish()`` returns before W&B's core
    process has written the last records, so read again until the ``exit`` record is there."""
    deadline = time.monotonic() + wait_s
    while True:
        out = list(records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in out):
            return out
        assert time.monotonic() < deadline, f"{path}: no exit record after {wait_s} s"
        time.sleep(0.2)


def read_run(save_dir: Path) -> OfflineRun:
    """The single finished offline run under ``save_dir/wandb`` (``offline-run-*/run-*.wandb``)."""
    (path,) = Path(save_dir).glob("wandb/offline-run-*/run-*.wandb")
    files = path.parent / "files"
    out = OfflineRun()
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.group, out.id, out.job_type = (
                record.run.run_group,
                record.run.run_id,
                record.run.job_type,
            )
            out.tags = list(record.run.tags)
        if kind in ("run", "config"):
            items = record.run.config.update if kind == "run" else record.config.update
            out.config.update({_path_key(i): json.loads(i.value_json) for i in items})
        if kind == "history":
            out.history.append(
                {_path_key(i): json.loads(i.value_json) for i in record.history.item}
            )
        if kind == "summary":
            out.summary.update(
                {_path_key(i): json.loads(i.value_json) for i in record.summary.update}
            )
    for row in out.history:
        for key, value in row.items():
            if key.endswith("/_type") and value == "table-file":
                name = key.removesuffix("/_type")
                out.tables[name] = json.loads((files / row[f"{name}/path"]).read_text())
    return out
