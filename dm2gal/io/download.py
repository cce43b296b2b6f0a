"""Download simulation files from the IllustrisTNG web API into the layout ``data=tng100`` reads.

The API (``https://www.tng-project.org/api/``, header ``api-key``) lists the chunk files of a
snapshot or group catalogue as JSON, ``GET <run>/files/<kind>-<snapshot>/`` ->
``{"files": [".../<kind>-<snapshot>.<i>.hdf5", ...]}`` (``kind``: ``snapshot`` or
``groupcat``); an entry may also be ``{"url": ..., "size": bytes, "sha256": hex}``. Chunk ``i``
of run ``run`` goes to ``dest/<run>/<output>/snapdir_NNN/snap_NNN.i.hdf5`` or
``.../groups_NNN/fof_subhalo_tab_NNN.i.hdf5`` (a listing of one unnumbered file: the single-file
``snap_NNN.hdf5`` / ``fof_subhalo_tab_NNN.hdf5``), as :mod:`dm2gal.io.gadget` reads them.

Each file is written to ``<name>.part``, resumed with an HTTP range request after a dropped
connection, checked (size, SHA-256 when listed, HDF5 signature) and only then renamed onto its
final name; a final file is never re-downloaded. 429 and 5xx answers are retried with
exponential back-off (``Retry-After`` honoured) by urllib3's ``Retry``.

The API key goes only to the API's origin (scheme, host, port) and to the origins its listings
name for files (:class:`KeyedSession`): HTTP libraries drop ``Authorization`` on a redirect to
another host, but not a custom header such as ``api-key``, so a redirect elsewhere would carry
the key there.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError
from urllib3.util.retry import Retry

from dm2gal.errors import UserError

KINDS = {"snapshot": ("snapdir", "snap"), "groupcat": ("groups", "fof_subhalo_tab")}
RETRY_STATUS = (429, 500, 502, 503, 504)
# a transfer cut short: resumed from the bytes on disk
BROKEN = (requests.ConnectionError, ChunkedEncodingError, requests.Timeout)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PART_SUFFIX = ".part"


class DownloadError(UserError, RuntimeError):
    """A listing or file could not be fetched or verified (the message names the URL)."""


@dataclass(frozen=True)
class Request:
    """One listing to fetch: the files of ``kind`` (``snapshot`` | ``groupcat``) of ``run``,
    with optional query ``params`` added to each file URL."""

    run: str
    kind: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class RemoteFile:
    """A file to download: its URL, final path, and size (bytes) / SHA-256 when known."""

    url: str
    dest: Path
    size: int | None = None
    sha256: str | None = None

    @property
    def part(self) -> Path:
        """The temporary name the file is written to until it is complete and verified."""
        return self.dest.with_name(self.dest.name + PART_SUFFIX)

    def state(self) -> str:
        """``done`` (final file present), ``partial`` (a ``.part`` to resume) or ``missing``."""
        if self.dest.is_file():
            return "done"
        return "partial" if self.part.is_file() else "missing"


@dataclass(frozen=True)
class Backoff:
    """Retry policy: ``retries`` per request for 429/5xx/connection errors, ``attempts`` per
    file for interrupted transfers; waits ``factor * 2**n`` seconds, at most ``max_wait``."""

    retries: int = 5
    attempts: int = 5
    factor: float = 1.0
    max_wait: float = 120.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.attempts < 1 or self.factor < 0 or self.timeout <= 0:
            raise ValueError(
                f"backoff needs retries >= 0, attempts >= 1, factor >= 0, timeout > 0; got {self}"
            )

    def wait(self, n: int) -> float:
        """Seconds to wait before try ``n + 1`` (``n`` from 0)."""
        return min(self.max_wait, self.factor * 2**n)


KEY_HEADER = "api-key"


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the port filled in for http and https."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class KeyedSession(requests.Session):
    """A session that sends the ``api-key`` header to trusted origins only: the API's, and the
    ones :meth:`trust` adds (the file hosts a listing names). Every request to another origin,
    a redirect included, goes without it."""

    def __init__(self, api_key: str, api_url: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.trusted = {origin(api_url)}

    def trust(self, url: str) -> None:
        """Send the key to the origin of ``url`` too."""
        self.trusted.add(origin(url))

    def _set_key(self, prepared: requests.PreparedRequest) -> None:
        if origin(prepared.url) in self.trusted:
            prepared.headers[KEY_HEADER] = self.api_key
        else:
            prepared.headers.pop(KEY_HEADER, None)

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        self._set_key(prepared)
        return prepared

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        """``requests``' hook for a redirect's credentials: also set or drop the key."""
        super().rebuild_auth(prepared_request, response)
        self._set_key(prepared_request)


def session(api_key: str, api_url: str, backoff: Backoff = Backoff()) -> KeyedSession:
    """A session sending ``api-key`` to the API at ``api_url`` (see :class:`KeyedSession`) and
    retrying 429/5xx and connection errors."""
    if not api_key:
        raise DownloadError("empty API key (get yours from the TNG website, account page)")
    retry = Retry(
        total=backoff.retries,
        connect=backoff.retries,
        read=backoff.retries,
        status=backoff.retries,
        backoff_factor=backoff.factor,
        backoff_max=backoff.max_wait,
        status_forcelist=RETRY_STATUS,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    s = KeyedSession(api_key, api_url)
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=32)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def check_status(response: requests.Response, what: str) -> None:
    """Raise :class:`DownloadError` for an error answer, naming ``what`` and the status."""
    code = response.status_code
    url = response.url
    if code < 400 or code == 416:
        return
    if code in (401, 403):
        raise DownloadError(
            f"{url}: HTTP {code}, the API key was rejected while fetching {what} "
            "(check the key in the environment variable)"
        )
    if code == 404:
        raise DownloadError(f"{url}: HTTP 404, {what} not found (check simulation and snapshot)")
    if code in RETRY_STATUS:
        raise DownloadError(f"{url}: HTTP {code} for {what}, still failing after the retries")
    raise DownloadError(f"{url}: HTTP {code} for {what}")


def chunk_path(root: Path, kind: str, snapshot: int, index: int | None) -> Path:
    """Where chunk ``index`` (``None``: a single-file product) goes under a run's ``root``."""
    folder, stem = KINDS[kind]
    tag = f"{snapshot:03d}"
    if index is None:
        return root / f"{stem}_{tag}.hdf5"
    return root / f"{folder}_{tag}" / f"{stem}_{tag}.{index}.hdf5"


def list_files(
    s: KeyedSession,
    base_url: str,
    request: Request,
    snapshot: int,
    dest: Path,
    output: str = "output",
    timeout: float = 60.0,
) -> list[RemoteFile]:
    """The files of one listing, with their destinations under ``dest/<run>/<output>``; the
    hosts it names for them are trusted with the key."""
    if request.kind not in KINDS:
        raise DownloadError(f"kind must be one of {sorted(KINDS)}, got {request.kind!r}")
    url = f"{base_url.rstrip('/')}/{request.run}/files/{request.kind}-{snapshot}/"
    what = f"the {request.kind} listing of {request.run} snapshot {snapshot}"
    response = s.get(url, timeout=timeout, headers={"Accept": "application/json"})
    check_status(response, what)
    try:
        entries = response.json()["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise DownloadError(f"{url}: expected JSON {{'files': [...]}} for {what}") from err
    pattern = re.compile(rf"{request.kind}-{snapshot}(?:\.(\d+))?\.hdf5$")
    root = dest / request.run / output
    files = []
    for entry in entries:
        item = entry if isinstance(entry, dict) else {"url": entry}
        if not isinstance(item.get("url"), str):
            raise DownloadError(f"{url}: listing entry {entry!r} has no file URL")
        match = pattern.search(urlsplit(item["url"]).path)
        if match is None:
            raise DownloadError(
                f"{url}: listing entry {item['url']!r} is not a "
                f"'{request.kind}-{snapshot}[.N].hdf5' file"
            )
        index = None if match.group(1) is None else int(match.group(1))
        file_url = requests.Request("GET", item["url"], params=request.params).prepare().url
        s.trust(file_url)
        files.append(
            RemoteFile(
                url=file_url,
                dest=chunk_path(root, request.kind, snapshot, index),
                size=None if item.get("size") is None else int(item["size"]),
                sha256=item.get("sha256"),
            )
        )
    if not files:
        raise DownloadError(f"{url}: the listing of {what} is empty")
    return files


def remote_size(s: requests.Session, item: RemoteFile, timeout: float = 60.0) -> int | None:
    """``item.size`` if listed, else the ``Content-Length`` of a HEAD request (None if absent)."""
    if item.size is not None:
        return item.size
    response = s.head(item.url, timeout=timeout, allow_redirects=True)
    check_status(response, item.dest.name)
    length = response.headers.get("Content-Length")
    return None if length is None else int(length)


def plan(
    s: KeyedSession,
    base_url: str,
    requests_: Iterable[Request],
    snapshot: int,
    dest: Path,
    output: str = "output",
    workers: int = 4,
    timeout: float = 60.0,
) -> list[RemoteFile]:
    """Every file of ``requests_`` with its size filled in (HEAD requests in parallel)."""
    files = [
        f for r in requests_ for f in list_files(s, base_url, r, snapshot, dest, output, timeout)
    ]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        sizes = list(pool.map(lambda f: remote_size(s, f, timeout), files))
    for item, size in zip(files, sizes, strict=True):
        item.size = size
    return files


class Interrupted(Exception):
    """A transfer ended before the announced number of bytes arrived."""


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _transfer(
    s: requests.Session,
    item: RemoteFile,
    timeout: float,
    chunk_bytes: int,
    on_bytes: Callable[[int], None],
) -> int | None:
    """One GET of ``item`` into ``item.part``, resuming from its length; return the total
    size the server announced (None if it did not). Raises :class:`Interrupted` when short."""
    offset = item.part.stat().st_size if item.part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with s.get(item.url, headers=headers, stream=True, timeout=timeout) as response:
        check_status(response, item.dest.name)
        if response.status_code == 416:  # nothing past offset: the part may be complete
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return offset
            item.part.unlink()
            raise Interrupted(f"range {offset}- rejected (HTTP 416)")
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                raise DownloadError(
                    f"{item.url}: asked for bytes {offset}-, got Content-Range "
                    f"{response.headers.get('Content-Range')!r}"
                )
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:  # 200: the whole file (the server ignored the range)
            on_bytes(-offset)
            length = response.headers.get("Content-Length")
            total, mode, offset = (None if length is None else int(length)), "wb", 0
        item.dest.parent.mkdir(parents=True, exist_ok=True)
        with open(item.part, mode) as f:
            for block in response.iter_content(chunk_bytes):
                f.write(block)
                on_bytes(len(block))
    got = item.part.stat().st_size
    if total is not None and got < total:
        raise Interrupted(f"{got} of {total} bytes")
    return total


def verify(item: RemoteFile, announced: int | None) -> None:
    """Check ``item.part``: size against the listing and the server, SHA-256 when listed, and
    the HDF5 signature. A bad file is deleted and :class:`DownloadError` raised."""
    got = item.part.stat().st_size
    problem = None
    for expected, source in ((item.size, "listed"), (announced, "announced")):
        if expected is not None and got != expected:
            problem = f"{got} bytes, {source} size {expected}"
    if problem is None and item.sha256 is not None:
        digest = hashlib.sha256()
        with open(item.part, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
        if digest.hexdigest() != item.sha256.lower():
            problem = f"SHA-256 {digest.hexdigest()}, listed {item.sha256}"
    if problem is None:
        with open(item.part, "rb") as f:
            if f.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                problem = "not an HDF5 file (no HDF5 signature at byte 0)"
    if problem is not None:
        item.part.unlink()
        raise DownloadError(f"{item.url}: verification of {item.dest} failed: {problem}")


def fetch(
    s: requests.Session,
    item: RemoteFile,
    backoff: Backoff = Backoff(),
    chunk_bytes: int = 1 << 20,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> Path:
    """Download ``item`` (resuming its ``.part``), verify it and rename it onto ``item.dest``.

    A dropped connection resumes from the bytes on disk, up to ``backoff.attempts`` times.
    """
    if item.dest.is_file():
        return item.dest
    for attempt in range(backoff.attempts):
        try:
            announced = _transfer(s, item, backoff.timeout, chunk_bytes, on_bytes)
            break
        except (*BROKEN, Interrupted) as err:
            reason = f"{type(err).__name__}: {err}"
            if attempt + 1 < backoff.attempts:
                time.sleep(backoff.wait(attempt))
    else:
        raise DownloadError(
            f"{item.url}: transfer interrupted {backoff.attempts} times (last: {reason}); "
            f"the partial file {item.part} is kept, run again to resume"
        )
    verify(item, announced)
    item.part.replace(item.dest)
    return item.dest


def download(
    s: requests.Session,
    files: list[RemoteFile],
    workers: int = 4,
    backoff: Backoff = Backoff(),
    progress: bool = True,
    chunk_bytes: int = 1 << 20,
) -> list[Path]:
    """Fetch ``files`` with ``workers`` parallel transfers and one byte progress bar; files
    already complete are skipped. Every file is attempted; the first error is raised at the end.
    A dropped connection loses at most the ``chunk_bytes`` being read."""
    from tqdm.auto import tqdm

    todo = [f for f in files if f.state() != "done"]
    total = sum(f.size or 0 for f in todo)
    done = sum(f.part.stat().st_size for f in todo if f.part.is_file())
    with tqdm(
        total=total or None,
        initial=done,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="download",
        disable=not progress,
    ) as bar:

        def one(item: RemoteFile) -> Path | DownloadError:
            try:
                return fetch(s, item, backoff, chunk_bytes, bar.update)
            except DownloadError as err:
                return err

        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(one, todo))
    errors = [r for r in results if isinstance(r, DownloadError)]
    if errors:
        more = f" (and {len(errors) - 1} more failed files)" if len(errors) > 1 else ""
        raise DownloadError(f"{errors[0]}{more}")
    return [f.dest for f in files]


def summary(files: list[RemoteFile], dest: Path) -> str:
    """A Markdown table of ``files`` (path under ``dest``, size, state) and the totals."""
    lines = ["| file | size (MiB) | state |", "|---|---|---|"]
    total = missing = 0
    for f in files:
        size = "?" if f.size is None else f"{f.size / 2**20:.1f}"
        lines.append(f"| {f.dest.relative_to(dest)} | {size} | {f.state()} |")
        total += f.size or 0
        missing += (f.size or 0) if f.state() != "done" else 0
    unknown = sum(f.size is None for f in files)
    tail = f" ({unknown} of unknown size)" if unknown else ""
    lines.append(
        f"\n{len(files)} files, {total / 2**30:.3f} GiB in all, "
        f"{missing / 2**30:.3f} GiB still to download{tail}"
    )
    return "\n".join(lines)


def as_requests(items: Iterable[dict[str, Any]]) -> list[Request]:
    """:class:`Request` objects from config nodes ``{run, kind, params}``."""
    return [Request(str(i["run"]), str(i["kind"]), dict(i.get("params") or {})) for i in items]
