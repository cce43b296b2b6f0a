"""``python -m dm2gal.download`` against a fake IllustrisTNG API on 127.0.0.1 serving a small
TNG-layout tree: listings, a dropped connection resumed with a range request, retried 429/503
answers, a wrong key, 404, verification failures; then ``data=tng100`` builds from the result."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from hydra import compose, initialize_config_dir
from tng_layout import make_pair

from dm2gal.download import run
from dm2gal.fields import build_fields
from dm2gal.io import download as dl
from dm2gal.io.store import FieldStore
from dm2gal.train.build import compose_train

CONF = Path(__file__).resolve().parents[1] / "conf"
KEY = "s3cret-key-0123456789"
FILE = re.compile(
    r"/api/(?P<run>[^/]+)/files/(?P<kind>snapshot|groupcat)-(?P<snap>\d+)(?P<rest>.*)"
)
FAST = [
    "backoff.factor=0.001",
    "backoff.max_wait=0.01",
    "backoff.timeout=10",
    "progress=false",
    "chunk_bytes=1024",
]


class FakeAPI:
    """Serves ``tree`` (written by :func:`tng_layout.make_pair`) the way the TNG API does.

    ``faults[path]`` is a queue of answers given instead of the normal one: ``"drop"`` (send
    half the body, then close the connection), or an HTTP status such as ``429`` or ``503``;
    ``always[path]`` is a fault given every time. ``log`` records ``(method, path, Range)``,
    ``keys`` the ``api-key`` header of every request (None: none sent). ``redirects[path]`` is
    a URL the path redirects to (302); listings name the files under ``file_base`` (default:
    this server's ``base``). With ``needs_key=False`` no key is asked for.
    """

    def __init__(self, tree: Path, sha256: bool = False, needs_key: bool = True):
        self.tree, self.sha256, self.needs_key = tree, sha256, needs_key
        self.faults: dict[str, list] = defaultdict(list)
        self.always: dict[str, object] = {}
        self.redirects: dict[str, str] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self.keys: list[str | None] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.base = self.file_base = f"{self.origin}/api/"

    def chunks(self, run: str, kind: str, snap: int) -> list[Path]:
        folder, stem = dl.KINDS[kind]
        tag = f"{snap:03d}"
        found = (self.tree / run / "output" / f"{folder}_{tag}").glob(f"{stem}_{tag}.*.hdf5")
        return sorted(found, key=lambda p: int(p.name.split(".")[-2]))

    def url(self, path: Path) -> str:
        run, kind = path.parts[-4], "snapshot" if path.name.startswith("snap") else "groupcat"
        return f"{self.file_base}{run}/files/{kind}-{int(path.name.split('_')[-1][:3])}" + (
            f".{path.name.split('.')[-2]}.hdf5"
        )

    def handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def send(self, code: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                api.log.append((self.command, self.path, self.headers.get("Range")))
                api.keys.append(self.headers.get("api-key"))
                if api.needs_key and self.headers.get("api-key") != KEY:
                    return self.send(401, b'{"detail": "Invalid API key."}')
                if path in api.redirects:
                    return self.send(302, Location=api.redirects[path])
                queue = api.faults[path]
                fault = queue[0] if queue else api.always.get(path)
                if fault == "drop" and self.command == "HEAD":
                    fault = None  # a HEAD has no body to cut
                elif queue:
                    queue.pop(0)
                if isinstance(fault, int):
                    return self.send(fault, b"busy", Retry_After="0")
                match = FILE.fullmatch(path)
                if match is None:
                    return self.send(404, b'{"detail": "Not found."}')
                chunks = api.chunks(match["run"], match["kind"], int(match["snap"]))
                if match["rest"] == "/":
                    if not chunks:
                        return self.send(404, b'{"detail": "Not found."}')
                    files = [api.url(p) for p in chunks]
                    if api.sha256:
                        files = [
                            {"url": u, "size": p.stat().st_size, "sha256": sha256(p)}
                            for u, p in zip(files, chunks, strict=True)
                        ]
                    body = json.dumps({"files": files}).encode()
                    return self.send(200, body, Content_Type="application/json")
                index = re.fullmatch(r"\.(\d+)\.hdf5", match["rest"])
                if index is None or int(index[1]) >= len(chunks):
                    return self.send(404, b'{"detail": "Not found."}')
                self.file(chunks[int(index[1])].read_bytes(), fault == "drop")

            def file(self, data: bytes, drop: bool) -> None:
                start = 0
                if (spec := self.headers.get("Range")) and self.command == "GET":
                    start = int(re.fullmatch(r"bytes=(\d+)-", spec)[1])
                    if start >= len(data):  # as real servers answer a range past the end
                        return self.send(416, Content_Range=f"bytes */{len(data)}")
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if self.command == "HEAD":
                    return
                body = data[start:]
                if drop:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> FakeAPI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path / "remote")


@pytest.fixture
def api(pair, tmp_path) -> Iterator[FakeAPI]:
    with FakeAPI(tmp_path / "remote") as server:
        yield server


def config(api: FakeAPI, dest: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "download", overrides=[f"base_url={api.base}", f"dest={dest}", *FAST, *overrides]
        )


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("TNG_API_KEY", KEY)


def remote_files(root: Path, runs: dict[str, tuple[str, ...]]) -> list[Path]:
    """Files of ``root`` in the listed runs whose names start with one of the prefixes."""
    return sorted(
        p.relative_to(root)
        for run, prefixes in runs.items()
        for p in (root / run).rglob("*.hdf5")
        if p.name.startswith(prefixes)
    )


PRODUCTS = {"TNG100-1-Dark": ("snap", "fof"), "TNG100-1": ("fof",)}


def test_download_resumes_retries_and_feeds_fields(api, pair, tmp_path, key):
    dest = tmp_path / "TNG100"
    dropped = "/api/TNG100-1-Dark/files/snapshot-99.0.hdf5"
    api.faults[dropped] = ["drop"]
    api.faults["/api/TNG100-1/files/groupcat-99/"] = [429, 429]
    api.faults["/api/TNG100-1-Dark/files/groupcat-99.2.hdf5"] = [503]
    files = run(config(api, dest))

    remote = tmp_path / "remote"
    expected = remote_files(remote, PRODUCTS)
    assert len(expected) == 9 and sorted(f.dest.relative_to(dest) for f in files) == expected
    for rel in expected:
        assert (dest / rel).read_bytes() == (remote / rel).read_bytes(), rel
    assert not list(dest.rglob("*.part"))
    size = (remote / "TNG100-1-Dark/output/snapdir_099/snap_099.0.hdf5").stat().st_size
    gets = [r for m, p, r in api.log if m == "GET" and p == dropped]
    assert gets[0] is None and re.fullmatch(r"bytes=\d+-", gets[1]) and len(gets) == 2
    resumed = int(gets[1][6:-1])  # the half sent, less the 1024-byte block being read
    assert size // 2 - 1024 < resumed <= size // 2 and resumed % 1024 == 0
    assert [p for m, p, _ in api.log].count("/api/TNG100-1/files/groupcat-99/") == 3

    store = build_fields(compose_train(["data=tng100", f"data.root={dest}", "data.grid=8",
                          "data.source.box=10.0", f"paths.data_dir={tmp_path}/data",
                          "data.source.progress=false"]))  # fmt: skip
    dm = FieldStore(store).read("dm")
    assert dm.sum(dtype=np.float64) == pytest.approx(len(pair.dm_pos) * pair.dm_mass, rel=1e-6)

    api.log.clear()  # a second run finds everything complete and transfers nothing
    run(config(api, dest))
    assert all(m == "HEAD" or p.endswith("/") for m, p, _ in api.log)


def test_dry_run_lists_sizes_and_writes_nothing(api, tmp_path, key, capsys):
    dest = tmp_path / "TNG100"
    subset = "+catalog.dark_dm.0.params.dm=Coordinates"  # query parameters of each file URL
    files = run(config(api, dest, "dry_run=true", "products=[dark_dm,groups,stars]", subset))
    dark = [f.url for f in files if "-Dark/files/snapshot-99." in f.url]
    assert len(dark) == 3 and all(u.endswith(".hdf5?dm=Coordinates") for u in dark)
    remote = tmp_path / "remote"
    every = remote_files(remote, {"TNG100-1-Dark": ("snap", "fof"), "TNG100-1": ("snap", "fof")})
    assert sorted(f.dest.relative_to(dest) for f in files) == every
    assert [f.size for f in files] == [(remote / f.dest.relative_to(dest)).stat().st_size
                                       for f in files]  # fmt: skip
    out = capsys.readouterr().out
    total = sum(f.size for f in files)
    assert f"12 files, {total / 2**30:.3f} GiB in all" in out
    assert out.count("| missing |") == 12
    assert not dest.exists()


def test_wrong_key_is_a_clear_error_and_never_written(api, tmp_path):
    env = {**os.environ, "TNG_API_KEY": "wrong-" + KEY, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "dm2gal.download", f"base_url={api.base}",
           f"dest={tmp_path / 'd'}", *FAST]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert "HTTP 401, the API key was rejected" in done.stderr
    # nothing is written anywhere (the command keeps no run directory or log), nor printed
    written = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(KEY in text for text in [done.stdout, done.stderr, *written])
    unset = {k: v for k, v in env.items() if k != "TNG_API_KEY"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=unset, cwd=tmp_path, timeout=120)
    assert "environment variable TNG_API_KEY (config key 'api_key_env') is not set" in done.stderr
    assert not (tmp_path / "d").exists()


def test_not_found_and_exhausted_retries(api, tmp_path, key):
    with pytest.raises(dl.DownloadError, match=r"HTTP 404, the snapshot listing of TNG50-9-Dark"):
        run(config(api, tmp_path / "d", "simulation=TNG50-9"))
    with pytest.raises(dl.DownloadError, match=r"HTTP 404.*snapshot 98"):
        run(config(api, tmp_path / "d", "snapshot=98"))
    busy = "/api/TNG100-1-Dark/files/groupcat-99.0.hdf5"
    api.always[busy] = 503
    with pytest.raises(dl.DownloadError, match=r"HTTP 503 for fof_subhalo_tab_099.0.hdf5, still"):
        run(config(api, tmp_path / "d", "backoff.retries=2", "products=[groups]"))
    assert [p for _, p, _ in api.log].count(busy) == 3  # HEAD: 1 try + 2 retries, then stop
    with pytest.raises(ValueError, match=r"'products': \['gas'\] not in catalog"):
        run(config(api, tmp_path / "d", "products=[gas]"))


def test_interrupted_run_keeps_part_and_next_run_resumes(api, tmp_path, key):
    dest = tmp_path / "d"
    path = "/api/TNG100-1-Dark/files/snapshot-99.2.hdf5"
    api.always[path] = "drop"
    with pytest.raises(dl.DownloadError, match=r"interrupted 3 times.*run again to resume"):
        run(config(api, dest, "backoff.attempts=3", "products=[dark_dm]"))
    target = dest / "TNG100-1-Dark/output/snapdir_099/snap_099.2.hdf5"
    source = tmp_path / "remote/TNG100-1-Dark/output/snapdir_099/snap_099.2.hdf5"
    size = source.stat().st_size
    part = target.with_name(target.name + ".part")
    assert not target.exists()
    kept = part.stat().st_size
    assert size // 2 < kept < size  # three transfers each gave about half of what was left
    assert (dest / "TNG100-1-Dark/output/snapdir_099/snap_099.0.hdf5").is_file()  # others done
    del api.always[path]
    api.log.clear()
    run(config(api, dest, "products=[dark_dm]"))
    assert target.read_bytes() == source.read_bytes() and not part.exists()
    assert [r for m, p, r in api.log if m == "GET" and p == path] == [f"bytes={kept}-"]


def test_complete_part_left_by_a_crash_is_verified_and_renamed(api, tmp_path, key):
    """A .part already whole (the run died before the rename): the range past its end gets
    HTTP 416 with the total size, and the file is verified and renamed without a transfer."""
    dest = tmp_path / "d"
    rel = "TNG100-1-Dark/output/snapdir_099/snap_099.0.hdf5"
    data = (tmp_path / "remote" / rel).read_bytes()
    part = dest / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    run(config(api, dest, "products=[dark_dm]"))
    assert (dest / rel).read_bytes() == data and not part.exists()
    path = "/api/TNG100-1-Dark/files/snapshot-99.0.hdf5"
    assert [r for m, p, r in api.log if m == "GET" and p == path] == [f"bytes={len(data)}-"]


def test_listed_checksum_and_size_are_verified(pair, tmp_path, key):
    with FakeAPI(tmp_path / "remote", sha256=True) as api:
        dest = tmp_path / "d"
        files = run(config(api, dest, "products=[groups]"))
        assert all(f.sha256 and f.dest.is_file() for f in files)
        s = dl.session(KEY, api.base, dl.Backoff(factor=0.001))
        listed = dl.plan(s, api.base, [dl.Request("TNG100-1", "groupcat")], 99, tmp_path / "e")
        (item,) = [f for f in listed if f.dest.name.endswith(".0.hdf5")]
        item.sha256 = "0" * 64
        with pytest.raises(dl.DownloadError, match=r"verification of .*SHA-256 .*, listed 0000"):
            dl.fetch(s, item)
        assert item.state() == "missing"
        item.sha256, item.size = None, item.size + 1
        with pytest.raises(dl.DownloadError, match=r"bytes, listed size \d+"):
            dl.fetch(s, item)
        assert item.state() == "missing"


GROUPCAT = "/api/TNG100-1/files/groupcat-99.0.hdf5"


def test_the_key_does_not_follow_a_redirect_to_another_host(pair, tmp_path, key):
    """A file of the API redirected to another port of 127.0.0.1 (another origin): the HEAD and
    the GET that follow the redirect go there without the key, and the file still arrives."""
    with FakeAPI(tmp_path / "remote") as api, FakeAPI(tmp_path / "remote", needs_key=False) as cdn:
        api.redirects[GROUPCAT] = cdn.origin + GROUPCAT
        files = run(config(api, tmp_path / "d", "products=[groups]"))
    assert all(f.state() == "done" for f in files)
    assert [m for m, p, _ in cdn.log] == ["HEAD", "GET"]
    assert cdn.keys == [None, None]
    assert set(api.keys) == {KEY}


def test_the_key_goes_to_the_file_host_a_listing_names(pair, tmp_path, key):
    with FakeAPI(tmp_path / "remote") as api, FakeAPI(tmp_path / "remote") as files_host:
        api.file_base = files_host.base
        files = run(config(api, tmp_path / "d", "products=[groups]"))
    assert all(f.state() == "done" for f in files)
    assert files_host.keys and set(files_host.keys) == {KEY}  # it asks for the key: all 200


def test_keyed_session_sets_and_drops_the_key_by_origin():
    s = dl.session(KEY, "https://www.tng-project.org/api/")
    headers = {
        url: s.prepare_request(requests.Request("GET", url)).headers.get("api-key")
        for url in (
            "https://www.tng-project.org/api/TNG100-1/",
            "https://WWW.tng-project.org:443/api/",
            "http://www.tng-project.org/api/",  # plain http: another origin
            "https://www.tng-project.org:8443/api/",
            "https://elsewhere.example/x",
        )
    }
    assert list(headers.values()) == [KEY, KEY, None, None, None]
