"""The download process, started by :func:`chatwidget.downloads.downloader.child_command`.

It imports what it needs, then reads one job (JSON, token included) from stdin, lists the repo,
checks free disk, and fetches the missing files with ``hf_hub_download`` on a small thread
pool, verifying each one. It writes JSON lines to its stdout channel:

- ``{"kind": "ready", "torch_loaded": bool, "pid": int}`` once the job arrived;
- ``{"kind": "plan", "commit": ..., "files": [[path, size, sha256, cached], ...]}`` before any byte;
- ``{"kind": "bytes", "files": {path: bytes_on_disk}, "transfer": bytes_received}`` up to
  20 times a second while bytes arrive;
- ``{"kind": "waiting", "files": [path, ...]}`` about twice a second while another process
  (a second kernel) holds the lock of those files: it is downloading them into the same cache;
- ``{"kind": "file_done", "path": ...}`` after a file is downloaded and verified;
- ``{"kind": "done", "snapshot": ...}`` or
  ``{"kind": "error", "error": name, "message": ..., "detail": ...}``.

Before any weights it checks that ``config.json`` describes them (from the safetensors
headers, read with range requests), so a hostile config is refused early. It runs at a lower
CPU and I/O priority than the kernel, so replies stay fast while it downloads. It never
imports torch, and it exits when its parent goes away (stdin closes). After the job, the
parent may write ``pause`` and ``resume`` lines on stdin: while paused the transfer waits
between chunks (at most :data:`MAX_PAUSE_S` at a time), so a reply's first token does not
compete with the download for the CPU. The parent stops it by
terminating it; cleaning the cache after that is the parent's job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatwidget.downloads.types import RemoteFile

DEFAULT_CHUNK_SIZE = 256 * 1024  # the parent normally sends its own
_HASH_BLOCK = 4 * 1024 * 1024
#: How much nicer (lower CPU priority) than its parent the download process runs (19: the most).
NICE_INCREMENT = 19
#: The longest one pause lasts if the parent never says ``resume`` (a safety valve).
MAX_PAUSE_S = 10.0
#: How often the process looks whether another process holds the lock of a file it waits for.
LOCK_PROBE_S = 0.25


def lower_priority() -> None:
    """Run below the kernel, so replies stay fast while a download runs: the lowest ``nice``,
    Linux's ``SCHED_IDLE`` policy (CPU time only when the kernel does not want it), and the
    lowest best-effort I/O class where Linux has ``ioprio``. Failures are ignored (the
    download still works, only less politely)."""
    with contextlib.suppress(OSError):
        if os.nice(0) < NICE_INCREMENT:  # the bootstrap may have done it already
            os.nice(NICE_INCREMENT)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    try:
        import psutil

        if hasattr(psutil, "IOPRIO_CLASS_BE"):
            psutil.Process().ionice(psutil.IOPRIO_CLASS_BE, value=7)
    except Exception:  # any platform quirk: keep the normal I/O priority
        pass


class Gate:
    """Paused or open; the transfer waits at a paused gate, never longer than ``max_s``."""

    def __init__(self, max_s: float = MAX_PAUSE_S) -> None:
        self.max_s = max_s
        self._open = threading.Event()
        self._open.set()

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def wait_open(self) -> None:
        if not self._open.wait(self.max_s):
            self._open.set()  # the parent forgot: go on rather than stall


#: Opened and closed by the parent's ``pause``/``resume`` lines.
GATE = Gate()


class Channel:
    """Thread-safe JSON-lines writer on the process's original stdout."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class ByteCounters:
    """Bytes written so far per file, fed by the tqdm hook and read by the reporter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._dirty = False
        self.transfer = 0

    def set(self, path: str, value: int) -> None:
        with self._lock:
            self._counts[path] = value
            self._dirty = True

    def add(self, path: str, delta: int) -> None:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + delta
            self._dirty = True

    def add_transfer(self, delta: int) -> None:
        """Bytes received from the network (on Xet they arrive before they reach the file)."""
        with self._lock:
            self.transfer += delta
            self._dirty = True

    def take_if_changed(self) -> dict[str, Any] | None:
        """A ``bytes`` message if anything moved since the last one, else None."""
        with self._lock:
            if not self._dirty:
                return None
            self._dirty = False
            return {"kind": "bytes", "files": dict(self._counts), "transfer": self.transfer}


def make_progress_class(
    counters: ByteCounters, path: str, on_start: Callable[[], None] | None = None
) -> type[Any]:
    """A tqdm subclass that counts the bytes of ``path`` and draws nothing.

    huggingface_hub makes one per file transfer (retries reuse it), right after it opened the
    ``.incomplete`` file; ``on_start`` runs then.
    """
    from tqdm.auto import tqdm

    class FileBytes(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            initial = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)
            counters.set(path, initial)
            if on_start is not None:
                on_start()

        def update(self, n: float | None = 1) -> bool | None:
            counters.add(path, int(n or 0))
            GATE.wait_open()  # between chunks: a pause holds the transfer here
            return None

        # Having these makes huggingface_hub use this one bar for both counters, on the plain
        # HTTP path and on Xet (which otherwise makes two bars and would count bytes twice):
        # ``update`` counts bytes on disk, ``update_transfer`` bytes off the network.
        def update_transfer(self, n: float | None = 1) -> None:
            counters.add_transfer(int(n or 0))

        def set_transfer_postfix_str(self, postfix: str, refresh: bool = False) -> None:
            return None

    return FileBytes


class TailHasher:
    """sha256 of a file while it is being written, so verifying overlaps the transfer.

    It reads through its own descriptor, which stays valid when huggingface_hub renames the
    finished ``.incomplete`` file into its blob. If the writer ever rewrote the file (a server
    that ignored a Range request), the digest is wrong and the caller re-hashes the blob.
    """

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")
        self._digest = hashlib.sha256()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chatwidget-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            GATE.wait_open()
            block = self._fh.read(_HASH_BLOCK)
            if block:
                self._digest.update(block)
            elif self._finished.is_set():
                while block := self._fh.read(_HASH_BLOCK):
                    self._digest.update(block)
                return
            else:
                self._finished.wait(0.02)

    def hexdigest(self) -> str:
        """Read the rest (the writer must be done) and return the digest."""
        self._finished.set()
        self._thread.join()
        self._fh.close()
        return self._digest.hexdigest()


def start_tail_hasher(blobs: Path, sha256: str) -> TailHasher | None:
    """Follow the newest ``blobs/<sha256>.*.incomplete``, or None if there is none."""
    candidates = list(blobs.glob(f"{sha256}.*incomplete"))
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)
    try:
        return TailHasher(newest)
    except OSError:
        return None


def sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify(pointer: Path, size: int, sha256: str | None, streamed: str | None = None) -> str | None:
    """Why ``pointer``'s content does not match the listing, or None when it does.

    ``streamed`` is a digest computed during the transfer; a mismatch is confirmed by
    hashing the file again before it counts.
    """
    actual = pointer.stat().st_size
    if actual != size:
        return f"size {actual} instead of {size}"
    if sha256 is not None and streamed != sha256:
        got = sha256_of(pointer)
        if got != sha256:
            return f"sha256 {got[:12]}… instead of {sha256[:12]}…"
    return None


class Job:
    """One download job inside the child: list, check disk, fetch and verify in parallel."""

    def __init__(self, job: dict[str, Any], token: str | bool | None, channel: Channel) -> None:
        from chatwidget.catalog import ModelSpec

        self.spec = ModelSpec(
            job["repo_id"],
            revision=job["revision"],
            allow_patterns=tuple(job["allow_patterns"]),
            ignore_patterns=tuple(job["ignore_patterns"]),
        )
        self.cache_dir = Path(job["cache_dir"])
        self.endpoint: str | None = job.get("endpoint")
        self.token = token
        self.channel = channel
        self.verifying = bool(job.get("verify", True))
        self.workers = max(1, int(job.get("max_parallel_files", 4)))
        self.report_interval_s = float(job.get("report_interval_s", 0.05))
        self.chunk_size = int(job.get("chunk_size", DEFAULT_CHUNK_SIZE))
        self.counters = ByteCounters()
        self.commit = ""
        self._files_lock = threading.Lock()
        self._started: set[str] = set()  # files whose transfer began (the lock is ours)
        self._pending: dict[str, Path] = {}  # files inside hf_hub_download -> their lock file

    def run(self) -> None:
        """Do the job; report through the channel. Raises on failure (caller classifies)."""
        from huggingface_hub import constants as hf_constants

        from chatwidget.downloads import cache, plan
        from chatwidget.errors import DiskFullError

        hf_constants.DOWNLOAD_CHUNK_SIZE = self.chunk_size
        spec, cache_dir = self.spec, self.cache_dir
        listing = plan.fetch_listing(
            spec, cache_dir=cache_dir, endpoint=self.endpoint, token=self.token
        )
        self.commit = listing.commit
        the_plan = plan.build_plan(spec, listing, cache_dir=cache_dir)
        self.channel.send(
            {
                "kind": "plan",
                "commit": self.commit,
                "files": [[f.path, f.size, f.sha256, f.cached] for f in the_plan.files],
            }
        )
        if not the_plan.fits_on_disk:
            raise DiskFullError(
                f"{spec.repo_id} needs {the_plan.missing_bytes / 1e9:.2f} GB more disk but only "
                f"{the_plan.disk_free_bytes / 1e9:.2f} GB is free in {cache_dir}. Free some "
                "space or delete models you no longer use, then retry."
            )
        # Largest first, so the big weights start at once and small files fill the gaps.
        todo = sorted((f for f in the_plan.files if not f.cached), key=lambda f: -f.size)
        stop_reporting = threading.Event()
        reporter = threading.Thread(
            target=_report_loop,
            args=(self.counters, self.channel, stop_reporting, self.report_interval_s),
            name="chatwidget-download-reporter",
            daemon=True,
        )
        reporter.start()
        watcher = threading.Thread(
            target=self._watch_locks,
            args=(stop_reporting,),
            name="chatwidget-download-locks",
            daemon=True,
        )
        watcher.start()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="chatwidget-fetch")
        try:
            todo = self.check_consistency(the_plan.files, todo, pool)
            futures = [pool.submit(self.fetch, f.path, f.size, f.sha256) for f in todo]
            done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                error = future.exception()
                if error is not None:
                    # Do not wait for the other transfers: the caller exits the process at
                    # once and the parent cleans the cache up.
                    raise error
            pool.shutdown()
        finally:
            stop_reporting.set()
            reporter.join()
            watcher.join()
        # The ref goes last, so a branch name only points at a complete snapshot.
        cache.write_ref(cache_dir, spec.repo_id, spec.revision, self.commit)
        snapshot = cache.snapshot_folder(cache_dir, spec.repo_id, self.commit)
        self.channel.send({"kind": "done", "snapshot": str(snapshot)})

    def check_consistency(
        self, files: Sequence[RemoteFile], todo: list[RemoteFile], pool: ThreadPoolExecutor
    ) -> list[RemoteFile]:
        """Fetch ``config.json`` first and refuse it unless it describes the weights (read
        from their safetensors headers); returns what is left to fetch."""
        from chatwidget.downloads import cache, validate
        from chatwidget.errors import UnsafeRepoError

        weights = [f for f in files if f.path.endswith(".safetensors")]
        config = next((f for f in files if f.path == "config.json"), None)
        if not weights or config is None or not any(not f.cached for f in weights):
            return todo
        if config.size > validate.MAX_CONFIG_BYTES:
            raise UnsafeRepoError(
                f"The config.json of {self.spec.repo_id} is {config.size:,} bytes, far more "
                "than any real config. Nothing was downloaded; pick another model."
            )
        if not config.cached:
            self.fetch(config.path, config.size, config.sha256)
            todo = [f for f in todo if f.path != config.path]
        snapshot = cache.snapshot_folder(self.cache_dir, self.spec.repo_id, self.commit)
        try:
            data = json.loads((snapshot / config.path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnsafeRepoError(
                f"The config.json of {self.spec.repo_id} is not valid JSON ({exc}). Nothing "
                "else was downloaded; pick another model."
            ) from exc
        shapes: dict[str, tuple[int, ...]] = {}
        for header in pool.map(lambda f: self.tensor_shapes(f, snapshot), weights):
            shapes.update(header)
        validate.check_config(self.spec.repo_id, data, shapes)
        return todo

    def tensor_shapes(self, file: RemoteFile, snapshot: Path) -> dict[str, tuple[int, ...]]:
        """Tensor name -> shape of one safetensors file, from its header: the cached file's,
        or read from the hub with range requests (a few kilobytes, not the weights)."""
        from huggingface_hub import HfApi

        from chatwidget.errors import UnsafeRepoError

        path = file.path
        if file.cached:
            return _local_tensor_shapes(snapshot / path)
        api = HfApi(endpoint=self.endpoint, token=self.token)
        try:
            meta = api.parse_safetensors_file_metadata(
                self.spec.repo_id, path, revision=self.commit
            )
        except Exception as exc:
            if type(exc).__name__ == "SafetensorsParsingError":
                raise UnsafeRepoError(
                    f"The safetensors header of {path} in {self.spec.repo_id} is malformed "
                    f"({exc}). Nothing was downloaded; pick another model."
                ) from exc
            raise
        return {name: tuple(int(d) for d in info.shape) for name, info in meta.tensors.items()}

    def _lock_path(self, sha256: str) -> Path:
        from chatwidget.downloads import cache

        folder = cache.repo_folder(self.cache_dir, self.spec.repo_id)
        return self.cache_dir / ".locks" / folder.name / f"{sha256}.lock"

    def _watch_locks(self, stop: threading.Event) -> None:
        """Report files that another process is downloading into this cache: their lock is
        held while this process waits for it (no bytes arrive, and that is not a stall)."""
        from filelock import FileLock, Timeout

        busy_before: set[str] = set()
        while not stop.wait(LOCK_PROBE_S):
            with self._files_lock:
                waiting = {p: lock for p, lock in self._pending.items() if p not in self._started}
            busy: set[str] = set()
            for path, lock_path in waiting.items():
                try:
                    with FileLock(str(lock_path), timeout=0):
                        pass
                except Timeout:
                    busy.add(path)
                except OSError:
                    continue
            # twice in a row: this process's own transfer takes the lock a moment before it
            # starts, and that moment is not waiting
            confirmed = sorted(busy & busy_before)
            busy_before = busy
            if confirmed:
                self.channel.send({"kind": "waiting", "files": confirmed})

    def fetch(self, path: str, size: int, sha256: str | None) -> None:
        """Download one file, hashing it as it arrives, and verify it against the listing."""
        from huggingface_hub import hf_hub_download

        from chatwidget.downloads import cache
        from chatwidget.errors import CorruptedFileError

        blobs = cache.repo_folder(self.cache_dir, self.spec.repo_id) / "blobs"
        hashers: list[TailHasher] = []

        def follow() -> None:
            with self._files_lock:
                self._started.add(path)
            if self.verifying and sha256 is not None and not hashers:
                hasher = start_tail_hasher(blobs, sha256)
                if hasher is not None:
                    hashers.append(hasher)

        if sha256 is not None:
            lock_path = self._lock_path(sha256)
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with self._files_lock:
                self._pending[path] = lock_path
        try:
            pointer = Path(
                hf_hub_download(
                    self.spec.repo_id,
                    path,
                    revision=self.commit,
                    cache_dir=self.cache_dir,
                    endpoint=self.endpoint,
                    token=self.token,
                    tqdm_class=make_progress_class(self.counters, path, follow),
                )
            )
        finally:
            with self._files_lock:
                self._pending.pop(path, None)
            streamed = hashers[0].hexdigest() if hashers else None
        problem = verify(pointer, size, sha256, streamed) if self.verifying else None
        if problem is not None:
            snapshot = cache.snapshot_folder(self.cache_dir, self.spec.repo_id, self.commit)
            cache.remove_file(snapshot, path)
            raise CorruptedFileError(
                f"{path} of {self.spec.repo_id} arrived corrupted ({problem}) and was removed. "
                "Retry the download; if it keeps failing, the hub or a proxy serves a bad file."
            )
        self.counters.set(path, size)
        self.channel.send({"kind": "file_done", "path": path})


def _local_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the header of a safetensors file on disk."""
    from chatwidget.downloads.validate import MAX_CONFIG_BYTES
    from chatwidget.errors import UnsafeRepoError

    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 25 * MAX_CONFIG_BYTES:
            raise UnsafeRepoError(f"{path.name} has an implausible safetensors header.")
        header = json.loads(fh.read(length))
    return {
        name: tuple(int(d) for d in info["shape"])
        for name, info in header.items()
        if name != "__metadata__"
    }


def _report_loop(
    counters: ByteCounters, channel: Channel, stop: threading.Event, interval: float
) -> None:
    while not stop.wait(interval):
        message = counters.take_if_changed()
        if message is not None:
            channel.send(message)
    message = counters.take_if_changed()
    if message is not None:
        channel.send(message)


def _listen_to_parent(stdin: IO[str], gate: Gate, on_gone: Callable[[], None]) -> None:
    """Follow ``pause``/``resume`` lines; at EOF (the parent closed the pipe or died) leave."""
    for line in stdin:
        command = line.strip()
        if command == "pause":
            gate.pause()
        elif command == "resume":
            gate.resume()
    gate.resume()
    on_gone()


def main() -> None:
    """Entry point of the download process."""
    # Keep the protocol channel private: anything else printing to stdout goes to stderr.
    channel = Channel(os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    lower_priority()  # first: a prestarted process imports at the lower priority too

    # Import everything first: a process started ahead of time (Downloader(prestart=True))
    # is then ready the moment its job arrives.
    import huggingface_hub  # noqa: F401

    from chatwidget.downloads import cache, errors_map, plan  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        sys.exit(2)  # no job: the parent went away (or closed) before sending one
    job = json.loads(line)
    token = job.pop("token", None)
    threading.Thread(
        target=_listen_to_parent,
        args=(sys.stdin, GATE, lambda: os._exit(3)),
        name="chatwidget-parent-watch",
        daemon=True,
    ).start()

    channel.send({"kind": "ready", "torch_loaded": "torch" in sys.modules, "pid": os.getpid()})
    try:
        Job(job, token, channel).run()
    except BaseException as exc:  # everything is reported to the parent
        error = errors_map.classify(exc, repo_id=job["repo_id"], revision=job["revision"])
        name, message = errors_map.describe(error)
        detail = f"{type(exc).__name__}: {exc}"[:2000]  # for the parent's debug log
        channel.send({"kind": "error", "error": name, "message": message, "detail": detail})
        # Other threads may still be mid-transfer: leave at once, the parent cleans up.
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
