"""The download process: ``python -m chatwidget.downloads.child``.

It reads one job (JSON, token included) from stdin, lists the repo, checks free disk, then
fetches the missing files with ``hf_hub_download`` on a small thread pool, verifying each one.
It writes JSON lines to its stdout channel:

- ``{"kind": "ready", "torch_loaded": bool}`` once imports are done;
- ``{"kind": "plan", "commit": ..., "files": [[path, size, sha256, cached], ...]}`` before any byte;
- ``{"kind": "bytes", "files": {path: bytes_done}}`` a few times a second while bytes arrive;
- ``{"kind": "file_done", "path": ...}`` after a file is downloaded and verified;
- ``{"kind": "done", "snapshot": ...}`` or ``{"kind": "error", "error": name, "message": ...}``.

It never imports torch, and it exits when its parent goes away (stdin closes). The parent
stops it by terminating it; cleaning the cache after that is the parent's job.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Any

DEFAULT_CHUNK_SIZE = 256 * 1024  # the parent normally sends its own
_HASH_BLOCK = 4 * 1024 * 1024


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

    def set(self, path: str, value: int) -> None:
        with self._lock:
            self._counts[path] = value
            self._dirty = True

    def add(self, path: str, delta: int) -> None:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + delta
            self._dirty = True

    def take_if_changed(self) -> dict[str, int] | None:
        with self._lock:
            if not self._dirty:
                return None
            self._dirty = False
            return dict(self._counts)


def make_progress_class(counters: ByteCounters, path: str) -> type[Any]:
    """A tqdm subclass that counts the bytes of ``path`` and draws nothing."""
    from tqdm.auto import tqdm

    class FileBytes(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            initial = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)
            counters.set(path, initial)

        def update(self, n: float | None = 1) -> bool | None:
            counters.add(path, int(n or 0))
            return None

    return FileBytes


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def verify(pointer: Path, size: int, sha256: str | None) -> str | None:
    """Why ``pointer``'s content does not match the listing, or None when it does."""
    actual = pointer.stat().st_size
    if actual != size:
        return f"size {actual} instead of {size}"
    if sha256 is not None:
        got = sha256_of(pointer)
        if got != sha256:
            return f"sha256 {got[:12]}… instead of {sha256[:12]}…"
    return None


def run(job: dict[str, Any], token: str | bool | None, channel: Channel) -> None:
    """Do one job; report everything through ``channel``. Raises DownloadError on failure."""
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import hf_hub_download

    from chatwidget.catalog import ModelSpec
    from chatwidget.downloads import cache, plan
    from chatwidget.errors import CorruptedFileError, DiskFullError

    hf_constants.DOWNLOAD_CHUNK_SIZE = int(job.get("chunk_size", DEFAULT_CHUNK_SIZE))
    spec = ModelSpec(
        job["repo_id"],
        revision=job["revision"],
        allow_patterns=tuple(job["allow_patterns"]),
        ignore_patterns=tuple(job["ignore_patterns"]),
    )
    cache_dir = Path(job["cache_dir"])
    endpoint = job.get("endpoint")

    commit, listed = plan.fetch_listing(spec, cache_dir=cache_dir, endpoint=endpoint, token=token)
    the_plan = plan.build_plan(spec, commit, listed, cache_dir=cache_dir)
    channel.send(
        {
            "kind": "plan",
            "commit": commit,
            "files": [[f.path, f.size, f.sha256, f.cached] for f in the_plan.files],
        }
    )
    if not the_plan.fits_on_disk:
        raise DiskFullError(
            f"{spec.repo_id} needs {the_plan.missing_bytes / 1e9:.2f} GB more disk but only "
            f"{the_plan.disk_free_bytes / 1e9:.2f} GB is free in {cache_dir}. Free some space "
            "or delete models you no longer use, then retry."
        )

    snapshot = cache.snapshot_folder(cache_dir, spec.repo_id, commit)
    counters = ByteCounters()
    stop_reporting = threading.Event()
    reporter = threading.Thread(
        target=_report_loop,
        args=(counters, channel, stop_reporting, float(job.get("report_interval_s", 0.05))),
        name="chatwidget-download-reporter",
        daemon=True,
    )
    reporter.start()

    def fetch(path: str, size: int, sha256: str | None) -> None:
        pointer = Path(
            hf_hub_download(
                spec.repo_id,
                path,
                revision=commit,
                cache_dir=cache_dir,
                endpoint=endpoint,
                token=token,
                tqdm_class=make_progress_class(counters, path),
            )
        )
        problem = verify(pointer, size, sha256) if job.get("verify", True) else None
        if problem is not None:
            cache.remove_file(snapshot, path)
            raise CorruptedFileError(
                f"{path} of {spec.repo_id} arrived corrupted ({problem}) and was removed. "
                "Retry the download; if it keeps failing, the hub or a proxy serves a bad file."
            )
        counters.set(path, size)
        channel.send({"kind": "file_done", "path": path})

    # Largest first, so the big weights start at once and small files fill the gaps.
    todo = sorted((f for f in the_plan.files if not f.cached), key=lambda f: -f.size)
    workers = max(1, int(job.get("max_parallel_files", 4)))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="chatwidget-fetch")
    try:
        futures = [pool.submit(fetch, f.path, f.size, f.sha256) for f in todo]
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                # Do not wait for the other transfers: the caller exits the process at once
                # and the parent cleans the cache up.
                raise error
        pool.shutdown()
    finally:
        stop_reporting.set()
        reporter.join()
    # The ref goes last, so a branch name only points at a complete snapshot.
    cache.write_ref(cache_dir, spec.repo_id, spec.revision, commit)
    channel.send({"kind": "done", "snapshot": str(snapshot)})


def _report_loop(
    counters: ByteCounters, channel: Channel, stop: threading.Event, interval: float
) -> None:
    while not stop.wait(interval):
        counts = counters.take_if_changed()
        if counts is not None:
            channel.send({"kind": "bytes", "files": counts})
    counts = counters.take_if_changed()
    if counts is not None:
        channel.send({"kind": "bytes", "files": counts})


def _exit_when_parent_goes(stdin: IO[str], on_gone: Callable[[], None]) -> None:
    stdin.read()  # returns at EOF: the parent closed the pipe or died
    on_gone()


def main() -> None:
    """Entry point of the download process."""
    # Keep the protocol channel private: anything else printing to stdout goes to stderr.
    channel = Channel(os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    line = sys.stdin.readline()
    if not line.strip():
        sys.exit(2)  # no job: the parent went away before sending one
    job = json.loads(line)
    token = job.pop("token", None)
    threading.Thread(
        target=_exit_when_parent_goes,
        args=(sys.stdin, lambda: os._exit(3)),
        name="chatwidget-parent-watch",
        daemon=True,
    ).start()

    # Import everything before saying "ready": the parent's stall timer starts then.
    import huggingface_hub  # noqa: F401

    from chatwidget.downloads import cache, errors_map, plan  # noqa: F401

    channel.send({"kind": "ready", "torch_loaded": "torch" in sys.modules, "pid": os.getpid()})
    try:
        run(job, token, channel)
    except BaseException as exc:  # everything is reported to the parent
        error = errors_map.classify(exc, repo_id=job["repo_id"], revision=job["revision"])
        name, message = errors_map.describe(error)
        channel.send({"kind": "error", "error": name, "message": message})
        # Other threads may still be mid-transfer: leave at once, the parent cleans up.
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
