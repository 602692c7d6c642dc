"""Shared helpers of the downloader tests: progress recording, cache inspection, threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from chatwidget.downloads import DownloadProgress
from chatwidget.testing.hub import LocalHub, RequestRecord

T = TypeVar("T")

CHILD_MODULE = "chatwidget.downloads.child import main"


class ProgressRecorder:
    """Collects progress updates (with arrival times) and signals byte thresholds."""

    def __init__(self) -> None:
        self.updates: list[DownloadProgress] = []
        self.times: list[float] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def __call__(self, progress: DownloadProgress) -> None:
        with self._cond:
            self.updates.append(progress)
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[DownloadProgress], bool], timeout: float) -> bool:
        """Wait until an update satisfies ``predicate``; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(predicate(u) for u in self.updates):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class Background:
    """Runs a call in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name="test-download", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the download did not end within {timeout} s"


def incomplete_files(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.incomplete"))


def dangling_links(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_symlink() and not p.exists())


def snapshot_files(cache: Path, repo_id: str) -> set[str]:
    """Paths of the files present (resolving) in every snapshot of ``repo_id``."""
    snaps = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    if not snaps.is_dir():
        return set()
    return {
        str(p.relative_to(snap)) for snap in snaps.iterdir() for p in snap.rglob("*") if p.is_file()
    }


def is_header_read(record: RequestRecord) -> bool:
    """A range request for a safetensors header (huggingface_hub reads the first 100 kB, then
    the rest of a bigger header), which the download process makes before any weights."""
    return record.range is not None and (
        record.range == "bytes=0-100000" or record.range.startswith("bytes=8-")
    )


def file_gets(hub: LocalHub, repo_id: str) -> list[str]:
    """File paths the hub served with GET on ``resolve`` URLs for ``repo_id``, in order
    (safetensors header reads left out)."""
    prefix = f"/{repo_id}/resolve/"
    out = []
    for record in hub.requests:
        if record.method == "GET" and record.path.startswith(prefix) and not is_header_read(record):
            out.append(record.path[len(prefix) :].split("/", 1)[1])
    return out


def eventually(read: Callable[[], list[T]], timeout: float = 20.0) -> list[T]:
    """``read()`` as soon as it is empty, else what it still returns after ``timeout`` s.

    A stopped download's process can take a while to exit when the CPUs are busy (it runs at
    SCHED_IDLE): ``download`` then returns without waiting, and the process and the partial
    files it leaves go a moment later, in the background.
    """
    deadline = time.monotonic() + timeout
    while (found := read()) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    return found


def download_children() -> list[psutil.Process]:
    """Live download processes started by this test process."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if CHILD_MODULE in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found
