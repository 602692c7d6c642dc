"""A local Hugging Face-compatible hub on loopback, for tests, the offline demo and benchmarks.

It serves a folder of repos laid out as ``ROOT/ORG/NAME/...`` with the endpoints
``huggingface_hub`` and ``transformers`` use (see ``shared/notes/hub-protocol.md``):

- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}``: repo info with ``sha``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true``: file listing, with ``lfs``
  (sha256) entries for weights;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: the file, with ``Range`` (206), ``ETag``,
  ``X-Repo-Commit``, ``X-Linked-Etag`` and ``X-Linked-Size``.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``GatedRepo``, ``RevisionNotFound``,
``EntryNotFound``), so the client raises its usual exceptions. The revision of every repo is
``main`` or its commit sha, a hash of its files' contents.

Tests can throttle it (:attr:`LocalHub.rate`), inject faults (:meth:`LocalHub.inject`) and read
what it served (:attr:`LocalHub.requests`). In process::

    with LocalHub(root) as hub:
        snapshot_download("demo/tiny-chat", endpoint=hub.url)

As a command (prints its URL on the first line of stdout, serves until SIGINT/SIGTERM)::

    python -m chatwidget.testing.hub serve ROOT [--port P] [--rate BYTES_PER_S] [--demo]
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import logging
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger("chatwidget.testing.hub")

#: Files served as LFS objects (sha256 ETag, ``lfs`` entry in the tree), like on the real Hub.
LFS_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack"}
)
LFS_MIN_SIZE = 10 * 1024 * 1024
LAST_MODIFIED = "2026-01-01T00:00:00.000Z"
_CHUNK = 64 * 1024
_PACED_CHUNK = 16 * 1024
_CORRUPT_BYTES = 16
_SENDFILE_CHUNK = 4 * 1024 * 1024


# --- repos on disk -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of a repo, with the hashes the hub protocol needs."""

    path: str
    local: Path
    size: int
    git_oid: str
    sha256: str

    @property
    def is_lfs(self) -> bool:
        """Whether the real Hub would store this file in LFS."""
        return Path(self.path).suffix in LFS_SUFFIXES or self.size >= LFS_MIN_SIZE

    @property
    def etag(self) -> str:
        """The ETag the Hub sends: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.is_lfs else self.git_oid


@dataclass(frozen=True)
class Repo:
    """A snapshot of one repo folder."""

    repo_id: str
    folder: Path
    files: tuple[FileEntry, ...]
    commit: str

    def file(self, path: str) -> FileEntry | None:
        """The entry for ``path``, or None."""
        for entry in self.files:
            if entry.path == path:
                return entry
        return None

    def directories(self) -> list[str]:
        """Every folder path that holds a file, parents included."""
        dirs: set[str] = set()
        for entry in self.files:
            parts = entry.path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return sorted(dirs)


class RepoStore:
    """Reads repos from ``root``; file hashes are cached by (size, mtime)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._hashes: dict[Path, tuple[int, int, str, str]] = {}

    def get(self, org: str, name: str) -> Repo | None:
        """The repo ``org/name``, or None when there is no such folder."""
        if not _safe_segment(org) or not _safe_segment(name):
            return None
        folder = self.root / org / name
        if not folder.is_dir():
            return None
        files = []
        for local in sorted(folder.rglob("*")):
            rel = local.relative_to(folder)
            if not local.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            size, git_oid, sha256 = self._hash(local)
            files.append(FileEntry(rel.as_posix(), local, size, git_oid, sha256))
        commit = hashlib.sha1(usedforsecurity=False)
        for entry in files:
            commit.update(f"{entry.path}\0{entry.sha256}\n".encode())
        return Repo(f"{org}/{name}", folder, tuple(files), commit.hexdigest())

    def _hash(self, local: Path) -> tuple[int, str, str]:
        stat = local.stat()
        with self._lock:
            cached = self._hashes.get(local)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return stat.st_size, cached[2], cached[3]
        git = hashlib.sha1(f"blob {stat.st_size}\0".encode(), usedforsecurity=False)
        sha = hashlib.sha256()
        with local.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                git.update(block)
                sha.update(block)
        result = (stat.st_size, stat.st_mtime_ns, git.hexdigest(), sha.hexdigest())
        with self._lock:
            self._hashes[local] = result
        return stat.st_size, result[2], result[3]


def _safe_segment(part: str) -> bool:
    return bool(part) and not part.startswith(".") and "/" not in part and "\\" not in part


def _safetensors_params(entries: list[FileEntry]) -> dict[str, Any] | None:
    """Parameter counts by dtype from the safetensors headers, as the Hub's model info has."""
    counts: dict[str, int] = {}
    for entry in entries:
        if not entry.path.endswith(".safetensors"):
            continue
        try:
            with entry.local.open("rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for key, value in header.items():
            if key == "__metadata__":
                continue
            numel = 1
            for dim in value["shape"]:
                numel *= dim
            counts[value["dtype"]] = counts.get(value["dtype"], 0) + numel
    if not counts:
        return None
    return {"parameters": counts, "total": sum(counts.values())}


# --- faults and the request log ------------------------------------------------------------


@dataclass(eq=False)
class Fault:
    """A fault armed by :meth:`LocalHub.inject`.

    It fires on the ``nth`` request whose path matches ``pattern`` (``fnmatch``, against the
    decoded URL path) and on the following ones, ``times`` times in all (None: forever).
    Body faults (``drop_after``, ``stall_after``, ``corrupt``) only match GET requests.
    ``ranged`` narrows it to requests with (True) or without (False) a ``Range`` header:
    False holds a file transfer but lets header reads (safetensors metadata) through.
    """

    pattern: str
    method: str | None = None
    ranged: bool | None = None
    status: int | None = None
    error_code: str | None = None
    delay: float | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    corrupt: bool = False
    nth: int = 1
    times: int | None = 1
    matched: int = 0
    fired: int = 0
    triggered: threading.Event = field(default_factory=threading.Event, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def touches_body(self) -> bool:
        """Whether the fault acts on the response body."""
        return self.drop_after is not None or self.stall_after is not None or self.corrupt

    @property
    def exhausted(self) -> bool:
        """Whether the fault will not fire again."""
        return self.times is not None and self.fired >= self.times

    def release(self) -> None:
        """End a stall: the stalled response goes on sending."""
        self._released.set()

    def wait_triggered(self, timeout: float) -> bool:
        """Wait until the fault has fired at least once; False on timeout."""
        return self.triggered.wait(timeout)

    def _matches(self, method: str, path: str, *, ranged: bool) -> bool:
        if self.method is not None and method != self.method.upper():
            return False
        if self.ranged is not None and ranged != self.ranged:
            return False
        if self.touches_body and method != "GET":
            return False
        return fnmatch.fnmatchcase(path, self.pattern)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the hub saw and answered it."""

    method: str
    path: str
    query: str
    range: str | None
    status: int
    bytes_sent: int
    token_present: bool
    faults: tuple[str, ...] = ()


@dataclass
class _OpenRecord:
    """A log entry still being written by its handler thread."""

    method: str
    path: str
    query: str
    range: str | None
    token_present: bool
    faults: tuple[str, ...]
    status: int = 0
    bytes_sent: int = 0

    def freeze(self) -> RequestRecord:
        return RequestRecord(
            method=self.method,
            path=self.path,
            query=self.query,
            range=self.range,
            status=self.status,
            bytes_sent=self.bytes_sent,
            token_present=self.token_present,
            faults=self.faults,
        )


class _AbortedError(Exception):
    """The response was cut off on purpose (a drop fault, or the hub stopping)."""


class _Pacer:
    """Shared byte-rate limit across all connections (virtual-clock token bucket)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def restart(self) -> None:
        """Forget past sends: the next one may go at once."""
        with self._lock:
            self._next = 0.0

    def wait(self, nbytes: int, rate: float, stop: threading.Event) -> bool:
        """Block until ``nbytes`` may be sent at ``rate`` bytes/s; False if ``stop`` was set."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / rate
        delay = start - time.monotonic()
        return not stop.wait(delay) if delay > 0 else not stop.is_set()


# --- HTTP ---------------------------------------------------------------------------------


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.commit = commit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # parallel downloads on a loaded machine overflow the default 5
    hub: LocalHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        logger.debug("error while serving %s: %r", client_address, exc)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "chatwidget-local-hub/1"
    timeout = 120

    # -- plumbing

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        if not self.server.hub.keep_alive:
            # One request per connection: a handler thread ends with its response, so tests
            # that check for leaked threads are not confused by idle keep-alive connections.
            self.send_header("Connection", "close")
        super().end_headers()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        path = "/" + "/".join(segments)
        faults = hub._fire_faults(method, path, ranged=self.headers.get("Range") is not None)
        token = self._token()
        self._entry = hub._open_record(
            method=method,
            path=path,
            query=split.query,
            range=self.headers.get("Range"),
            token_present=token is not None,
            faults=tuple(_fault_kinds(faults)),
        )
        try:
            self._apply_pre_faults(faults)
            self._route(method, segments, parse_qs(split.query), token, faults)
        except _HubError as err:
            self._send_error(method, err)
        except _AbortedError:
            self._abort()
        except OSError:
            self.close_connection = True
        except Exception:
            # A bug in the hub: make it loud, and cut the connection rather than hang the client.
            logger.exception("local hub failed on %s %s", method, self.path)
            self._abort()

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip() or None
        return None

    def _apply_pre_faults(self, faults: list[Fault]) -> None:
        hub = self.server.hub
        for fault in faults:
            if fault.delay and hub._closing.wait(fault.delay):
                raise _AbortedError
        for fault in faults:
            if fault.status is not None:
                raise _HubError(
                    fault.status, fault.error_code, f"injected fault: status {fault.status}"
                )

    # -- routing

    def _route(
        self,
        method: str,
        seg: list[str],
        query: dict[str, list[str]],
        token: str | None,
        faults: list[Fault],
    ) -> None:
        if seg[:2] == ["api", "models"] and len(seg) >= 4 and method == "GET":
            repo = self._repo(seg[2], seg[3], token)
            rest = seg[4:]
            if not rest:
                self._send_json(method, self._info(repo, "main", query), faults)
            elif rest[0] == "revision" and len(rest) == 2:
                self._send_json(method, self._info(repo, rest[1], query), faults)
            elif rest[0] == "tree" and len(rest) >= 2:
                self._resolve_rev(repo, rest[1])
                self._send_json(method, self._tree(repo, "/".join(rest[2:]), query), faults)
            else:
                raise _HubError(404, None, f"no such endpoint: {self.path}")
        elif len(seg) >= 5 and seg[2] == "resolve":
            repo = self._repo(seg[0], seg[1], token)
            commit = self._resolve_rev(repo, seg[3])
            entry = repo.file("/".join(seg[4:]))
            if entry is None:
                raise _HubError(404, "EntryNotFound", f"{'/'.join(seg[4:])} not found", commit)
            self._send_file(method, repo, entry, faults)
        elif seg == ["api", "agent-harnesses"]:
            raise _HubError(404, None, "not served by the local hub")
        else:
            raise _HubError(404, None, f"no such endpoint: {self.path}")

    def _repo(self, org: str, name: str, token: str | None) -> Repo:
        hub = self.server.hub
        repo = hub.store.get(org, name)
        if repo is None:
            raise _HubError(404, "RepoNotFound", f"Repository {org}/{name} not found")
        expected = hub.gated.get(repo.repo_id)
        if expected is not None and token != expected:
            raise _HubError(
                401,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. Pass a token that has access.",
            )
        return repo

    @staticmethod
    def _resolve_rev(repo: Repo, rev: str) -> str:
        if rev in {"main", repo.commit} or (rev == repo.commit[: len(rev)] and len(rev) >= 7):
            return repo.commit
        raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _info(self, repo: Repo, rev: str, query: dict[str, list[str]]) -> dict[str, Any]:
        commit = self._resolve_rev(repo, rev)
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings: list[dict[str, Any]] = []
        for entry in repo.files:
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if entry.is_lfs:
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": 134,
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "gated": "manual" if repo.repo_id in self.server.hub.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["transformers", "safetensors", "llama", "text-generation"],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in repo.files),
        }
        params = _safetensors_params(list(repo.files))
        if params is not None:
            info["safetensors"] = params
        return info

    @staticmethod
    def _tree(repo: Repo, sub: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        sub = sub.strip("/")
        dirs = repo.directories()
        if sub and sub not in dirs:
            raise _HubError(404, "EntryNotFound", f"{sub} is not a folder", repo.commit)
        prefix = f"{sub}/" if sub else ""

        def included(path: str) -> bool:
            if not path.startswith(prefix):
                return False
            return recursive or "/" not in path[len(prefix) :]

        out: list[dict[str, Any]] = []
        for d in dirs:
            if included(d):
                oid = hashlib.sha1(d.encode(), usedforsecurity=False).hexdigest()
                out.append({"type": "directory", "oid": oid, "size": 0, "path": d})
        for entry in repo.files:
            if included(entry.path):
                item: dict[str, Any] = {
                    "type": "file",
                    "oid": entry.git_oid,
                    "size": entry.size,
                    "path": entry.path,
                }
                if entry.is_lfs:
                    item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": 134}
                out.append(item)
        out.sort(key=lambda item: item["path"])
        return out

    # -- responses

    def _send_error(self, method: str, err: _HubError) -> None:
        body = json.dumps({"error": err.message}).encode()
        self._entry.status = err.status
        self.send_response(err.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if err.code:
            self.send_header("X-Error-Code", err.code)
        self.send_header("X-Error-Message", err.message.encode("ascii", "replace").decode())
        if err.commit:
            self.send_header("X-Repo-Commit", err.commit)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _send_json(self, method: str, payload: Any, faults: list[Fault]) -> None:
        body = json.dumps(payload).encode()
        self._entry.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self._write_body(_BytesSource(body), 0, len(body), faults)

    def _send_file(self, method: str, repo: Repo, entry: FileEntry, faults: list[Fault]) -> None:
        start, end = 0, entry.size - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header and method == "GET":
            parsed = _parse_range(range_header, entry.size)
            if parsed is None:
                self._entry.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{entry.size}")
                self.send_header("Content-Length", "0")
                self.send_header("X-Repo-Commit", repo.commit)
                self.end_headers()
                return
            start, end = parsed
            status = 206
        length = max(0, end - start + 1)
        self._entry.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if entry.is_lfs:
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(entry.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        with entry.local.open("rb") as fh:
            self._write_body(_FileSource(fh), start, length, faults)

    def _write_body(self, source: _Source, offset: int, length: int, faults: list[Fault]) -> None:
        hub = self.server.hub
        drop = min((f.drop_after for f in faults if f.drop_after is not None), default=None)
        stalls = sorted(
            (f for f in faults if f.stall_after is not None), key=lambda f: f.stall_after or 0
        )
        corrupt = any(f.corrupt for f in faults)
        rate = hub.rate
        if drop is None and not stalls and not corrupt and not rate:
            self._send_all(source, offset, length)
            return
        chunk_size = _PACED_CHUNK if rate else _CHUNK
        sent = 0
        while sent < length:
            for stall in stalls:
                if stall.stall_after == sent and not stall._released.is_set():
                    self._stall(stall)
            limit = min(chunk_size, length - sent)
            for stop_at in [drop, *(s.stall_after for s in stalls)]:
                if stop_at is not None and sent < stop_at:
                    limit = min(limit, stop_at - sent)
            if drop is not None and sent >= drop:
                raise _AbortedError
            data = source.read(offset + sent, limit)
            if not data:
                raise _AbortedError
            if corrupt and sent < _CORRUPT_BYTES:
                cut = min(len(data), _CORRUPT_BYTES - sent)
                data = bytes(b ^ 0xFF for b in data[:cut]) + data[cut:]
            rate = hub.rate
            if rate and not hub._pacer.wait(len(data), rate, hub._closing):
                raise _AbortedError
            with self._counting(len(data)):
                self.wfile.write(data)
            sent += len(data)
        if drop is not None and sent >= drop:
            raise _AbortedError

    @contextlib.contextmanager
    def _counting(self, nbytes: int) -> Iterator[None]:
        # Counted before the write, so the log is complete by the time the client has the bytes.
        self._entry.bytes_sent += nbytes
        try:
            yield
        except OSError:
            self._entry.bytes_sent -= nbytes
            raise

    def _send_all(self, source: _Source, offset: int, length: int) -> None:
        done = 0
        while done < length:
            n = min(_SENDFILE_CHUNK, length - done)
            with self._counting(n):
                source.send_all(self.connection, offset + done, n)
            done += n

    def _stall(self, fault: Fault) -> None:
        hub = self.server.hub
        while not fault._released.wait(0.05):
            if hub._closing.is_set():
                raise _AbortedError

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Source:
    def read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def send_all(self, sock: socket.socket, offset: int, length: int) -> int:
        raise NotImplementedError


class _BytesSource(_Source):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]

    def send_all(self, sock: socket.socket, offset: int, length: int) -> int:
        sock.sendall(self.data[offset : offset + length])
        return length


class _FileSource(_Source):
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def read(self, offset: int, size: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(size)

    def send_all(self, sock: socket.socket, offset: int, length: int) -> int:
        return sock.sendfile(self.fh, offset, length)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse ``bytes=N-``, ``bytes=N-M`` or ``bytes=-K`` to inclusive (start, end).

    Returns None when the range is malformed or unsatisfiable.
    """
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end


def _fault_kinds(faults: list[Fault]) -> Iterator[str]:
    for fault in faults:
        for kind, on in (
            ("delay", fault.delay is not None),
            ("status", fault.status is not None),
            ("drop", fault.drop_after is not None),
            ("stall", fault.stall_after is not None),
            ("corrupt", fault.corrupt),
        ):
            if on:
                yield kind


# --- the hub ------------------------------------------------------------------------------


class LocalHub:
    """An HF-compatible hub serving ``root`` on 127.0.0.1, in a background thread.

    ``rate`` limits the bytes per second of all bodies together (None: unlimited), and can be
    changed while it runs. ``gated`` maps repo ids to the token that unlocks them.
    ``keep_alive=False`` (the default) closes each connection after its response.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        rate: float | None = None,
        gated: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_alive: bool = False,
    ) -> None:
        self.store = RepoStore(Path(root))
        self.keep_alive = keep_alive
        self._pacer = _Pacer()
        self._rate: float | None = None
        self.rate = rate
        self.gated: dict[str, str] = dict(gated or {})
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[_OpenRecord] = []
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def rate(self) -> float | None:
        """Bytes per second for all response bodies together; None means unlimited."""
        return self._rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError("rate must be a positive number of bytes per second, or None.")
        self._pacer.restart()  # no debt carried over from an earlier, slower rate
        self._rate = value

    @property
    def root(self) -> Path:
        """The folder of repos."""
        return self.store.root

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``; use it as ``HF_ENDPOINT``."""
        if self._server is None:
            raise RuntimeError("the hub is not running: call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalHub:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._closing.clear()
        server = _Server((self._host, self._port), _Handler)
        server.hub = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="chatwidget-local-hub",
            daemon=True,
        )
        self._thread.start()
        logger.info("local hub serving %s at %s", self.root, self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, cut open connections (stalled ones included) and join all threads."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._closing.set()
        server.shutdown()
        thread.join(timeout)
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for handler_thread in conns.values():
            handler_thread.join(max(0.0, deadline - time.monotonic()))
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and log

    def inject(
        self,
        path: str = "*",
        *,
        method: str | None = None,
        status: int | None = None,
        error_code: str | None = None,
        delay: float | None = None,
        drop_after: int | None = None,
        stall_after: int | None = None,
        corrupt: bool = False,
        nth: int = 1,
        times: int | None = 1,
        ranged: bool | None = None,
    ) -> Fault:
        """Arm a fault for requests whose decoded path matches the glob ``path``.

        - ``status``: answer with this status (and ``X-Error-Code: error_code`` if given);
        - ``delay``: wait this many seconds before answering;
        - ``drop_after``: send the headers and this many body bytes, then drop the connection;
        - ``stall_after``: send this many body bytes, then stop until ``fault.release()`` or
          :meth:`stop`;
        - ``corrupt``: flip the first 16 bytes of the body;
        - ``ranged``: only requests with (True) or without (False) a ``Range`` header.

        It fires on the ``nth`` matching request and the next ones, ``times`` in all.
        """
        if nth < 1 or (times is not None and times < 1):
            raise ValueError("nth and times must be at least 1 (times=None: every time).")
        fault = Fault(
            pattern=path,
            method=method,
            status=status,
            error_code=error_code,
            delay=delay,
            drop_after=drop_after,
            stall_after=stall_after,
            corrupt=corrupt,
            nth=nth,
            times=times,
            ranged=ranged,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Disarm all faults and release any stalled response."""
        with self._lock:
            faults, self._faults = self._faults, []
        for fault in faults:
            fault.release()

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, in order of arrival.

        A request is logged when it arrives; its ``status`` and ``bytes_sent`` are final once
        the client has received the response (0 while the answer has not started).
        """
        with self._lock:
            return [record.freeze() for record in self._requests]

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Back to a clean state between tests: no faults, empty log, no rate limit."""
        self.clear_faults()
        self.clear_requests()
        self.rate = None

    def _fire_faults(self, method: str, path: str, *, ranged: bool = False) -> list[Fault]:
        fired = []
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault._matches(method, path, ranged=ranged):
                    continue
                fault.matched += 1
                if fault.matched >= fault.nth:
                    fault.fired += 1
                    fired.append(fault)
        for fault in fired:
            fault.triggered.set()
        return fired

    def _open_record(
        self,
        *,
        method: str,
        path: str,
        query: str,
        range: str | None,
        token_present: bool,
        faults: tuple[str, ...],
    ) -> _OpenRecord:
        record = _OpenRecord(method, path, query, range, token_present, faults)
        with self._lock:
            self._requests.append(record)
        return record

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)


# --- child process and command line -----------------------------------------------------------


@contextlib.contextmanager
def run_hub_process(
    root: Path | str,
    *,
    rate: float | None = None,
    port: int = 0,
    gated: dict[str, str] | None = None,
    demo: bool = False,
    start_timeout: float = 120.0,
) -> Iterator[str]:
    """Run ``python -m chatwidget.testing.hub serve`` in a child process; yield its URL.

    The child is terminated (then killed if it lingers) when the block ends.
    """
    cmd = [sys.executable, "-m", "chatwidget.testing.hub", "serve", str(root), "--port", str(port)]
    if rate:
        cmd += ["--rate", str(rate)]
    for repo_id, token in (gated or {}).items():
        cmd += ["--gate", f"{repo_id}={token}"]
    if demo:
        cmd.append("--demo")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        url = _read_url(proc, start_timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _read_url(proc: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []

    def read() -> None:
        if proc.stdout is not None:
            result.append(proc.stdout.readline().strip())

    reader = threading.Thread(target=read, name="hub-url-reader", daemon=True)
    reader.start()
    reader.join(timeout)
    if not result or not result[0].startswith("http"):
        proc.kill()
        raise RuntimeError(
            f"the hub process did not print its URL within {timeout:.0f} s "
            f"(exit code {proc.poll()}); run the command by hand to see why."
        )
    return result[0]


def _parse_gate(value: str) -> tuple[str, str]:
    repo_id, sep, token = value.partition("=")
    if not sep or not repo_id or not token:
        raise argparse.ArgumentTypeError(f"--gate wants REPO=TOKEN, got {value!r}")
    return repo_id, token


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m chatwidget.testing.hub``."""
    parser = argparse.ArgumentParser(prog="python -m chatwidget.testing.hub")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve ROOT/ORG/NAME repos until SIGINT/SIGTERM")
    serve.add_argument("root", type=Path)
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--rate", type=float, default=None, help="limit to BYTES_PER_S in all")
    serve.add_argument(
        "--gate", type=_parse_gate, action="append", default=[], help="REPO=TOKEN (repeatable)"
    )
    serve.add_argument(
        "--demo", action="store_true", help="build the demo repos into ROOT first if missing"
    )
    args = parser.parse_args(argv)
    gated = dict(args.gate)
    if args.demo:
        from chatwidget.testing.models import DEMO_GATED, build_demo_hub

        build_demo_hub(args.root)
        gated = {**DEMO_GATED, **gated}
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder; build repos into it first (or pass --demo).")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rate = args.rate or None  # 0 means unlimited
    hub = LocalHub(args.root, rate=rate, gated=gated, host=args.host, port=args.port)
    with hub:
        sys.stdout.write(hub.url + "\n")
        sys.stdout.flush()
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
