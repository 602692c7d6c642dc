"""Two processes downloading one repo into one cache; partial files of dead processes; the
download process's priority."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from dl_helpers import Background, ProgressRecorder, download_children, eventually, incomplete_files

from chatwidget.downloads import Downloader, DownloadProgress
from chatwidget.engine import Engine
from chatwidget.errors import DownloadCanceledError
from chatwidget.orchestrator import ModelState, Orchestrator
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_REPO as TINY_REPO

WAIT_S = 60.0


def _waiting(progress: DownloadProgress) -> bool:
    return progress.note.startswith("Waiting for another download")


def test_a_second_process_waits_for_the_first_and_ends_ready_not_stalled(
    local_hub: LocalHub, small_repo: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first download holds the lock of one shard and stalls on it (as a slow network
    # would); the second, in another process on the same cache, must wait for it. The
    # first's own read timeout (10 s by default) must not end the stall before the test does.
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "120")
    stall = local_hub.inject(
        f"/{small_repo}/resolve/*/model-00001-of-00002.safetensors",
        method="GET",
        stall_after=100_000,
        ranged=False,
        times=1,
    )
    first = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False)
    first_progress = ProgressRecorder()
    job = Background(
        lambda: first.download(small_repo, on_progress=first_progress, cancel=threading.Event())
    )
    assert stall.wait_triggered(WAIT_S)
    second = Downloader(
        endpoint=local_hub.url, cache_dir=hf_cache, token=False, stall_timeout_s=3.0
    )
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=1 << 30)
    orch = Orchestrator(second, engine)
    seen: list[DownloadProgress] = []
    orch.subscribe(lambda e: seen.append(e.progress) if hasattr(e, "progress") else None)
    try:
        orch.open_conversation("c1", model=small_repo)
        waiting = ProgressRecorder()
        orch.subscribe(lambda e: waiting(e.progress) if hasattr(e, "progress") else None)
        # it keeps waiting, told why, for longer than twice its stall timeout
        assert waiting.wait_for(_waiting, WAIT_S)
        note_at = next(
            t for t, p in zip(waiting.times, waiting.updates, strict=True) if _waiting(p)
        )
        # For longer than twice its stall timeout it keeps waiting, and says why, at every
        # look (no progress event arrives meanwhile: nothing moves, by design).
        looks = 0
        tick = threading.Event()
        while time.monotonic() - note_at < 7.0:
            status = orch.snapshot().models[small_repo]
            assert status.state is ModelState.DOWNLOADING
            assert status.note == f"Waiting for another download of {small_repo}"
            assert status.failure is None
            looks += 1
            tick.wait(0.1)
        assert looks > 10
        assert first_progress.updates[-1].bytes_done < first_progress.updates[-1].bytes_total
        stall.release()
        job.join(WAIT_S)
        assert job.error is None
        assert orch.wait_until_idle(WAIT_S)
        assert orch.state(small_repo) is ModelState.READY
        assert orch.snapshot().models[small_repo].note is None
        assert second.is_downloaded(small_repo)
        assert eventually(lambda: incomplete_files(hf_cache)) == []
    finally:
        local_hub.clear_faults()
        orch.close()
        first.close()
        second.close()
        engine.close()
    assert eventually(download_children) == []


HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from filelock import FileLock
    with FileLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def test_a_download_removes_a_dead_processs_partial_file_but_not_a_live_ones(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    blobs = hf_cache / "models--demo--tiny-chat" / "blobs"
    blobs.mkdir(parents=True)
    dead = blobs / ("a" * 64 + ".0123abcd.incomplete")
    live = blobs / ("b" * 64 + ".4567cdef.incomplete")
    for path in (dead, live):
        path.write_bytes(b"half")
    lock = hf_cache / ".locks" / "models--demo--tiny-chat" / ("b" * 64 + ".lock")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        downloader = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False)
        downloader.download(TINY_REPO, on_progress=lambda _p: None, cancel=threading.Event())
        assert not dead.exists()
        assert live.exists(), "another live process's partial file is left alone"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(WAIT_S)
        if holder.stdout is not None:
            holder.stdout.close()


def test_the_download_process_runs_at_a_lower_cpu_and_io_priority(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    downloader = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False, prestart=True)
    try:
        [child] = download_children()
        me = psutil.Process()
        deadline = threading.Event()
        # the process lowers its own priority first thing; give it a moment to start
        for _ in range(2000):
            if child.nice() > me.nice() and child.ionice().ioclass == psutil.IOPRIO_CLASS_BE:
                break
            deadline.wait(0.01)
        assert child.nice() >= min(19, me.nice() + 10)
        assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE  # CPU only when we idle
        ionice = child.ionice()
        assert ionice.ioclass == psutil.IOPRIO_CLASS_BE
        assert ionice.value == 7
    finally:
        downloader.close()


def test_a_hold_pauses_a_running_download_without_a_stall_and_release_resumes_it(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    local_hub.rate = 2_000_000  # ~14 s for the model: it is mid-file throughout
    downloader = Downloader(
        endpoint=local_hub.url, cache_dir=hf_cache, token=False, stall_timeout_s=1.0
    )
    progress = ProgressRecorder()
    cancel = threading.Event()
    job = Background(lambda: downloader.download(small_repo, on_progress=progress, cancel=cancel))
    try:
        assert progress.wait_for(lambda p: p.bytes_done > 500_000, WAIT_S)
        release = downloader.hold()  # a reply starts
        held_at = len(progress.updates)
        pause = threading.Event()
        pause.wait(0.5)  # in-flight chunks land
        settled = progress.updates[-1].bytes_done
        pause.wait(2.0)  # twice the stall timeout: a pause is not a stall
        assert job.thread.is_alive(), f"the held download ended: {job.error!r}"
        assert progress.updates[-1].bytes_done - settled < 600_000, "it kept downloading"
        assert len(progress.updates) >= held_at
        release()
        release()  # idempotent
        assert progress.wait_for(lambda p: p.bytes_done > settled + 1_000_000, WAIT_S)
    finally:
        cancel.set()
        job.join(10)
        downloader.close()
    assert isinstance(job.error, DownloadCanceledError)
