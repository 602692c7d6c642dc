"""The :class:`Downloader` facade: runs each download in a child process and supervises it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from huggingface_hub import get_token

from chatwidget.catalog import ModelSpec
from chatwidget.downloads import cache, errors_map, plan
from chatwidget.downloads.progress import ProgressTracker
from chatwidget.downloads.types import CachedModel, DownloadPlan, DownloadProgress
from chatwidget.errors import (
    DownloadCanceledError,
    DownloadError,
    DownloadInProgressError,
    StalledDownloadError,
)

log = logging.getLogger("chatwidget.downloads.downloader")

_POLL_S = 0.02  # how often the supervisor looks at cancel and the stall timer
#: How long stopping a download waits for its process to be gone before the rest of the
#: stop (reaping it, removing its partial files) moves to a background thread. A process that
#: runs below the kernel (nice 19, SCHED_IDLE) can take seconds to exit while the kernel keeps
#: the CPUs busy (a reply), and the queue must not wait for it.
_EXIT_WAIT_S = 0.2
#: How long a new download of a repo waits for a stopped download of it to finish exiting.
_REAP_WAIT_S = 60.0
_STARTUP_TIMEOUT_S = 120.0  # the child must be up (imports done) within this
_STDERR_TAIL = 4000
_NOTHING: dict[str, Any] = {"kind": "nothing"}
#: Bytes per socket read in the child: small enough for smooth progress and stall detection.
DEFAULT_CHUNK_SIZE = 256 * 1024


@dataclass(eq=False)
class _Process:
    """A started download process, idle until it reads a job on stdin."""

    proc: subprocess.Popen[str]
    stderr: IO[bytes]

    @classmethod
    def start(cls) -> _Process:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _release / _stop_all
        proc = subprocess.Popen(
            child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            encoding="utf-8",
        )
        return cls(proc, stderr)


@dataclass(eq=False)
class _Child:
    """One running download process and the thread that reads its messages."""

    repo_id: str
    proc: subprocess.Popen[str]
    messages: queue.Queue[dict[str, Any] | None]
    stderr: IO[bytes]
    stop: threading.Event = field(default_factory=threading.Event)  # set by close()
    reader: threading.Thread | None = None


# Runs chatwidget.downloads.child without executing the package __init__ files, which import
# the widget stack: the download process stays lean (huggingface_hub, no torch) and starts fast.
_BOOTSTRAP = """
import os, sys, types
try:  # below the kernel from the first import on (child.lower_priority() completes it)
    os.nice(19)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    pass
root = sys.argv[1]
for name in ("chatwidget", "chatwidget.downloads"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = package
from chatwidget.downloads.child import main
main()
"""


def child_command() -> list[str]:
    """The command line of a download process (it reads its job from stdin)."""
    package_root = str(Path(__file__).resolve().parents[2])
    return [sys.executable, "-c", _BOOTSTRAP, package_root]


class _Run:
    """The parent's view of one download: turns child messages into progress updates."""

    def __init__(
        self,
        repo_id: str,
        on_progress: Callable[[DownloadProgress], None],
        interval_s: float,
    ) -> None:
        self._repo_id = repo_id
        self._on_progress = on_progress
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._ready_at: float | None = None
        self._tracker: ProgressTracker | None = None
        self._sizes: dict[str, int] = {}
        self._latest: dict[str, int] = {}
        self._transfer = 0

    def waited(self, now: float) -> float:
        return now - self._started

    def idle_for(self, now: float) -> float | None:
        """Seconds since bytes last arrived (None until the child is up)."""
        if self._ready_at is None:
            return None
        last = self._tracker.last_activity if self._tracker is not None else 0.0
        return now - max(self._ready_at, last)

    def handle(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "ready":
            self._ready_at = time.monotonic()
            if message.get("torch_loaded"):
                log.warning("The download process imported torch; it should not need to")
        elif kind == "plan":
            self._sizes = {str(p): int(s) for p, s, _sha, _cached in message["files"]}
            cached = {str(p): int(s) for p, s, _sha, c in message["files"] if c}
            self._tracker = ProgressTracker(
                self._repo_id,
                self._sizes,
                self._on_progress,
                interval_s=self._interval_s,
                already_done=cached,
            )
            self._tracker.update({})  # the totals, before the first byte
        elif kind == "bytes" and self._tracker is not None:
            counts = {str(p): int(n) for p, n in message["files"].items()}
            current = _busiest(counts, self._latest, self._sizes)
            self._latest.update(counts)
            transfer = int(message.get("transfer", 0))
            if transfer > self._transfer:  # bytes off the network count as activity too
                self._transfer = transfer
                self._tracker.touch()
            self._tracker.update(counts, current=current)
        elif kind == "file_done" and self._tracker is not None:
            self._tracker.mark_done(str(message["path"]))
            self._tracker.update({})
        elif kind == "waiting" and self._tracker is not None:
            # another process (a second kernel) is downloading these files into this cache:
            # waiting for it is not a stall, and the user is told why nothing moves
            self._tracker.touch()
            self._tracker.set_note(
                f"Waiting for another download of {self._repo_id}",
                files=(str(p) for p in message.get("files", ())),
            )

    def touch(self) -> None:
        """Count now as activity (the download was paused on purpose)."""
        if self._tracker is not None:
            self._tracker.touch()

    def finish(self) -> None:
        """Send the final update (once the totals are known)."""
        if self._tracker is not None:
            self._tracker.finish()
            self._tracker = None


class Downloader:
    """Downloads models into the standard Hugging Face cache, one child process per download.

    Safe to share between threads; several downloads may run at once. The token is used for
    hub requests only: it is handed to the child through a pipe and never logged, returned or
    shown in ``repr``.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        stall_timeout_s: float = 30.0,
        progress_interval_s: float = 0.1,
        max_parallel_files: int = 4,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        verify: bool = True,
        prestart: bool = False,
    ) -> None:
        if stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be positive (seconds without bytes).")
        if max_parallel_files < 1:
            raise ValueError("max_parallel_files must be at least 1.")
        self.endpoint = endpoint
        self.cache_dir = cache.resolve_cache_dir(cache_dir)
        self.stall_timeout_s = stall_timeout_s
        self.progress_interval_s = progress_interval_s
        self.max_parallel_files = max_parallel_files
        self.chunk_size = chunk_size
        self.verify = verify
        self.__token = token
        self._lock = threading.Lock()
        self.prestart = prestart
        self._children: set[_Child] = set()
        self._busy: set[str] = set()  # repos being downloaded (one download per repo at a time)
        self._reaping: dict[str, threading.Thread] = {}  # stopped downloads still exiting
        self._spares: list[_Process] = []  # at most one idle, already-imported process
        self._holds = 0  # replies starting now: downloads pause until they release
        self._released_at = 0.0
        self._finalizer = weakref.finalize(
            self, _stop_all, self._children, self._spares, self._lock
        )
        if prestart:
            self._keep_spare()

    def __repr__(self) -> str:
        return (
            f"Downloader(endpoint={self.endpoint!r}, cache_dir={str(self.cache_dir)!r}, "
            f"stall_timeout_s={self.stall_timeout_s})"
        )

    def hold(self) -> Callable[[], None]:
        """Pause every running download until the returned function is called.

        For a reply that is about to start: its first token then does not share the CPU with
        the download (the download process waits between chunks; it resumes on its own after
        ``child.MAX_PAUSE_S`` if it is never released). Holds nest; the release is idempotent,
        and the stall timer does not count the paused time.
        """
        with self._lock:
            self._holds += 1
            if self._holds == 1:
                for child in self._children:
                    _tell(child.proc, "pause")
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._holds -= 1
                if self._holds == 0:
                    self._released_at = time.monotonic()
                    for child in self._children:
                        _tell(child.proc, "resume")

        return release

    def set_token(self, token: str | bool | None) -> None:
        """Use ``token`` from the next hub request on (None: huggingface_hub's usual sources)."""
        self.__token = token

    # --- offline queries ---------------------------------------------------------------

    def is_downloaded(self, spec: ModelSpec | str) -> bool:
        """True when every file the model needs is in the cache. No network."""
        return self.snapshot_path(spec) is not None

    def snapshot_path(self, spec: ModelSpec | str) -> Path | None:
        """The cached snapshot folder if the model is complete, else None. No network."""
        return cache.complete_snapshot(self.cache_dir, ModelSpec.coerce(spec))

    def cached_models(self) -> list[CachedModel]:
        """Models fully downloaded in the cache, by this or any other tool, with sizes."""
        return cache.cached_models(self.cache_dir)

    def delete(self, repo_id: str) -> int:
        """Remove a model (every revision) from the cache; returns the bytes freed.

        Raises DownloadInProgressError while this downloader is fetching that repo.
        """
        repo_id = ModelSpec.coerce(repo_id).repo_id
        with self._lock:
            if repo_id in self._busy:
                raise DownloadInProgressError(
                    f"{repo_id} is downloading right now: cancel the download, then delete it."
                )
            return cache.delete_repo(self.cache_dir, repo_id)

    # --- network ------------------------------------------------------------------------

    def plan(self, spec: ModelSpec | str, *, token: str | bool | None = None) -> DownloadPlan:
        """List what a download would fetch, with disk and memory needs. Raises DownloadError.

        ``token``: the requesting consumer's token (None: this downloader's own).
        """
        spec = ModelSpec.coerce(spec)
        try:
            listing = plan.fetch_listing(
                spec,
                cache_dir=self.cache_dir,
                endpoint=self.endpoint,
                token=self._token(token),
                read_fit=True,
            )
        except Exception as exc:
            raise errors_map.classify(exc, repo_id=spec.repo_id, revision=spec.revision) from exc
        return plan.build_plan(spec, listing, cache_dir=self.cache_dir)

    def download(
        self,
        spec: ModelSpec | str,
        *,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
        token: str | bool | None = None,
    ) -> Path:
        """Download into the HF cache and return the snapshot folder. Blocks.

        ``token`` is the requesting consumer's token (None: this downloader's own); it travels
        to the download process through a pipe only.
        A model already complete in the cache returns at once, with no request to the hub.
        Partial files that a dead process left for this repo are removed first (only those
        whose lock is free: never a live download's). If another process (a second kernel)
        is downloading the same files into this cache, progress says "Waiting for another
        download of ..." and the download ends when that one does, never as a stall.
        A second download of a repo that is already downloading raises
        DownloadInProgressError. Setting ``cancel`` stops the transfer within 0.5 s and raises
        DownloadCanceledError;
        finished files stay cached and partial ones are removed. Progress arrives at most every
        ``progress_interval_s``, and a final update (``final=True``) is always sent.
        """
        spec = ModelSpec.coerce(spec)
        snapshot = cache.complete_snapshot(self.cache_dir, spec)
        if snapshot is not None:
            _report_cached(spec, snapshot, on_progress)
            return snapshot
        if cancel.is_set():
            raise DownloadCanceledError(f"The download of {spec.repo_id} was canceled.")
        self._wait_for_reaper(spec.repo_id)
        with self._lock:
            if spec.repo_id in self._busy or spec.repo_id in self._reaping:
                raise DownloadInProgressError(
                    f"{spec.repo_id} is already downloading: wait for that download, or cancel "
                    "it and start again."
                )
            self._busy.add(spec.repo_id)
        try:
            self._clean_orphans(spec.repo_id)
            return self._download_in_child(spec, on_progress, cancel, token)
        finally:
            with self._lock:
                self._busy.discard(spec.repo_id)
            if self.prestart:
                self._keep_spare()

    def _download_in_child(
        self,
        spec: ModelSpec,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
        token: str | bool | None,
    ) -> Path:
        child = self._spawn(spec, token)
        finished = False
        try:
            result = self._supervise(child, spec, on_progress, cancel)
            finished = True
            return result
        finally:
            if _end_process(child.proc):
                self._after_exit(child, clean=not finished)
            else:  # still exiting: the rest of the stop happens when it is gone
                reaper = threading.Thread(
                    target=self._reap,
                    args=(child, not finished),
                    name="chatwidget-download-reaper",
                    daemon=True,
                )
                with self._lock:
                    self._reaping[spec.repo_id] = reaper
                reaper.start()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until every stopped download is cleaned up: its process gone and its partial
        files removed (a process slow to exit is reaped in the background; ``download``
        returns without waiting for it). True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                reapers = list(self._reaping.values())
            if not reapers:
                return True
            for reaper in reapers:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                reaper.join(left)

    def _after_exit(self, child: _Child, *, clean: bool) -> None:
        """The process is gone: release its pipes and, for a stopped download, its partial
        files (finished files stay cached)."""
        _release(child)
        with self._lock:
            self._children.discard(child)
        if clean:
            self._clean_after_stop(child.repo_id)

    def _reap(self, child: _Child, clean: bool) -> None:
        try:
            child.proc.wait()
            self._after_exit(child, clean=clean)
        except Exception:
            log.exception("Reaping the download process of %s failed", child.repo_id)
        finally:
            with self._lock:
                self._reaping.pop(child.repo_id, None)

    def _wait_for_reaper(self, repo_id: str) -> None:
        """A download of ``repo_id`` stopped a moment ago may still be exiting: its partial
        files are removed once it is gone, so a new download starts after that."""
        with self._lock:
            reaper = self._reaping.get(repo_id)
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(_REAP_WAIT_S)

    def close(self) -> None:
        """Stop every running download (their ``download`` calls raise) and reap the children."""
        _stop_all(self._children, self._spares, self._lock)
        with self._lock:
            reapers = list(self._reaping.values())
        deadline = time.monotonic() + 2.0
        for reaper in reapers:  # killed: each ends once its process is gone
            reaper.join(max(0.0, deadline - time.monotonic()))

    # --- internals ----------------------------------------------------------------------

    def _token(self, override: str | bool | None = None) -> str | bool | None:
        token = override if override is not None else self.__token
        if isinstance(token, str):
            return token
        if token is False:
            return False
        return get_token()

    def _spawn(self, spec: ModelSpec, token: str | bool | None = None) -> _Child:
        job = {
            "repo_id": spec.repo_id,
            "revision": spec.revision,
            "allow_patterns": list(spec.allow_patterns),
            "ignore_patterns": list(spec.ignore_patterns),
            "cache_dir": str(self.cache_dir),
            "endpoint": self.endpoint,
            "max_parallel_files": self.max_parallel_files,
            "chunk_size": self.chunk_size,
            "verify": self.verify,
            "report_interval_s": min(0.05, self.progress_interval_s),
        }
        process = self._take_spare() or _Process.start()
        proc, stderr = process.proc, process.stderr
        child = _Child(spec.repo_id, proc, queue.Queue(), stderr)
        with self._lock:
            self._children.add(child)
        assert proc.stdin is not None
        # The token travels only through this pipe: never argv, env or logs.
        proc.stdin.write(json.dumps({**job, "token": self._token(token)}) + "\n")
        proc.stdin.flush()
        with self._lock:
            if self._holds:  # a reply is starting: this download waits for it too
                _tell(proc, "pause")
        child.reader = threading.Thread(
            target=_read_messages, args=(child,), name="chatwidget-download-reader", daemon=True
        )
        child.reader.start()
        log.debug("Started download process %d for %s", proc.pid, spec.repo_id)
        return child

    def _keep_spare(self) -> None:
        """Start an idle download process, so the next download skips the start-up cost."""
        with self._lock:
            self._spares[:] = [p for p in self._spares if p.proc.poll() is None]
            if not self._spares:
                self._spares.append(_Process.start())

    def _take_spare(self) -> _Process | None:
        with self._lock:
            while self._spares:
                spare = self._spares.pop()
                if spare.proc.poll() is None:
                    return spare
                spare.stderr.close()
        return None

    def _supervise(
        self,
        child: _Child,
        spec: ModelSpec,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
    ) -> Path:
        run = _Run(spec.repo_id, on_progress, self.progress_interval_s)

        def fail(error: DownloadError) -> DownloadError:
            _kill(child.proc)  # the caller's ``finally`` waits for it and cleans the cache up
            run.finish()
            return error

        while True:
            if cancel.is_set() or child.stop.is_set():
                why = "canceled" if cancel.is_set() else "stopped because the downloader closed"
                raise fail(
                    DownloadCanceledError(
                        f"The download of {spec.repo_id} was {why}. Finished files are kept; "
                        "downloading again fetches only what is missing."
                    )
                )
            try:
                message = child.messages.get(timeout=_POLL_S)
            except queue.Empty:
                message = _NOTHING
            if message is None:
                if cancel.is_set() or child.stop.is_set():
                    continue  # killed on purpose: reported as canceled at the top of the loop
                raise fail(self._unexpected_exit(child, spec))
            kind = message["kind"]
            if kind == "done":
                run.finish()
                return Path(message["snapshot"])
            if kind == "error":
                log.debug("Download of %s failed: %s", spec.repo_id, message.get("detail"))
                raise fail(errors_map.rebuild(message["error"], message["message"]))
            run.handle(message)
            if self._holds or time.monotonic() - self._released_at < 1.0:
                run.touch()  # paused on purpose: not a stall
            idle = run.idle_for(time.monotonic())
            if idle is None and run.waited(time.monotonic()) > _STARTUP_TIMEOUT_S:
                raise fail(DownloadError("The download process did not start in time; retry."))
            if idle is not None and idle > self.stall_timeout_s:
                raise fail(
                    StalledDownloadError(
                        f"No data arrived for {self.stall_timeout_s:g} s while downloading "
                        f"{spec.repo_id}: the connection or the hub has stalled. Check your "
                        "network and retry; finished files are kept."
                    )
                )

    def _unexpected_exit(self, child: _Child, spec: ModelSpec) -> DownloadError:
        code = child.proc.wait()
        child.stderr.seek(0)
        tail = child.stderr.read()[-_STDERR_TAIL:].decode("utf-8", "replace")
        log.error("Download process for %s exited with code %s:\n%s", spec.repo_id, code, tail)
        return DownloadError(
            f"The download process for {spec.repo_id} exited unexpectedly (code {code}). "
            "Retry; if it keeps failing, see the 'chatwidget' log for details."
        )

    def _clean_orphans(self, repo_id: str) -> None:
        removed = cache.remove_incomplete(self.cache_dir, repo_id)
        if removed:
            log.info("Removed %d partial file(s) a dead download of %s left", len(removed), repo_id)

    def _clean_after_stop(self, repo_id: str) -> None:
        removed = cache.remove_incomplete(self.cache_dir, repo_id)
        dangling = cache.remove_dangling_links(self.cache_dir, repo_id)
        if removed or dangling:
            log.info(
                "Cleaned %s: %d partial file(s), %d dangling link(s)",
                repo_id,
                len(removed),
                len(dangling),
            )


def _busiest(counts: dict[str, int], previous: dict[str, int], sizes: dict[str, int]) -> str:
    """The file that received the most bytes since the last report (the 'current' file)."""
    best, best_gain = "", 0
    for path, count in counts.items():
        gain = count - previous.get(path, 0)
        if gain > best_gain and count < sizes.get(path, 0):
            best, best_gain = path, gain
    return best


def _report_cached(
    spec: ModelSpec, snapshot: Path, on_progress: Callable[[DownloadProgress], None]
) -> None:
    paths = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()]
    wanted = cache.select(paths, spec)
    total = sum(cache.cached_size(snapshot, p) or 0 for p in wanted)
    on_progress(
        DownloadProgress(
            repo_id=spec.repo_id,
            bytes_done=total,
            bytes_total=total,
            files_done=len(wanted),
            files_total=len(wanted),
            eta_s=0.0,
            final=True,
        )
    )


def _read_messages(child: _Child) -> None:
    assert child.proc.stdout is not None
    try:
        for line in child.proc.stdout:
            try:
                child.messages.put(json.loads(line))
            except ValueError:
                log.debug("Ignoring a malformed line from the download process")
    except (OSError, ValueError):
        pass  # the pipe closed under us: the process is gone
    finally:
        child.messages.put(None)


def _tell(proc: subprocess.Popen[str], command: str) -> None:
    """Write one command line to a download process (ignored once it is gone)."""
    if proc.stdin is None or proc.poll() is not None:
        return
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.write(command + "\n")
        proc.stdin.flush()


def _kill(proc: subprocess.Popen[Any]) -> None:
    """End a download process now. Nothing is lost: its files reach the cache by rename when
    complete, and its file locks go with it. It first gets a normal CPU share back where the
    system allows that (root, CAP_SYS_NICE or RLIMIT_NICE): dying takes it some CPU time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(proc.pid, os.SCHED_OTHER, os.sched_param(0))
    with contextlib.suppress(OSError):
        proc.kill()


def _end_process(proc: subprocess.Popen[Any]) -> bool:
    """Kill the process and wait a moment for it; True when it is gone."""
    _kill(proc)
    try:
        proc.wait(_EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        return False
    return True


def _release(child: _Child) -> None:
    """Release a gone process's pipes and reader thread."""
    proc = child.proc
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    # The process is gone, so the reader sees EOF and ends on its own.
    if child.reader is not None and child.reader is not threading.current_thread():
        child.reader.join(timeout=2.0)
    if proc.stdout is not None and (child.reader is None or not child.reader.is_alive()):
        proc.stdout.close()
    child.stderr.close()


def _stop_all(children: set[_Child], spares: list[_Process], lock: threading.Lock) -> None:
    with lock:
        running = list(children)
        idle, spares[:] = list(spares), []
    for child in running:
        child.stop.set()
    procs = [c.proc for c in running] + [p.proc for p in idle]
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 1.0
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)  # killed; one starved of CPU is left to exit on its own
    for spare in idle:
        for stream in (spare.proc.stdin, spare.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        spare.stderr.close()
