"""Cancel: stops within 0.5 s (even on a stalled server), keeps finished files, cleans the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dl_helpers import (
    Background,
    ProgressRecorder,
    dangling_links,
    download_children,
    eventually,
    file_gets,
    incomplete_files,
    snapshot_files,
)

from chatwidget.downloads import Downloader
from chatwidget.errors import DownloadCanceledError
from chatwidget.testing.hub import LocalHub

CANCEL_BOUND_S = 0.5


def _downloader(hub: LocalHub, cache: Path, **kwargs: object) -> Downloader:
    return Downloader(endpoint=hub.url, cache_dir=cache, token=False, **kwargs)  # type: ignore[arg-type]


def _cancel_and_time(cancel: threading.Event, job: Background) -> float:
    started = time.monotonic()
    cancel.set()
    job.join(10)
    assert job.finished_at is not None
    return job.finished_at - started


def test_cancel_mid_file_returns_within_half_a_second_and_leaves_no_incomplete(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    local_hub.rate = 2_000_000  # 14 s for the model: the cancel lands mid-file
    downloader = _downloader(local_hub, hf_cache)
    recorder = ProgressRecorder()
    cancel = threading.Event()
    job = Background(lambda: downloader.download(small_repo, on_progress=recorder, cancel=cancel))
    assert recorder.wait_for(lambda p: p.bytes_done > 1_000_000, timeout=30)
    assert incomplete_files(hf_cache), "the transfer should be mid-file when canceled"

    elapsed = _cancel_and_time(cancel, job)

    assert isinstance(job.error, DownloadCanceledError)
    assert elapsed < CANCEL_BOUND_S, f"cancel took {elapsed:.3f} s"
    assert eventually(lambda: incomplete_files(hf_cache)) == []
    assert dangling_links(hf_cache) == []
    assert eventually(download_children) == []
    assert recorder.updates[-1].final
    assert not downloader.is_downloaded(small_repo)


def test_cancel_while_the_server_stalls_returns_within_half_a_second(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    stall = local_hub.inject("*.safetensors", stall_after=100_000, times=None)
    downloader = _downloader(local_hub, hf_cache, stall_timeout_s=60)
    cancel = threading.Event()
    job = Background(
        lambda: downloader.download(small_repo, on_progress=lambda _p: None, cancel=cancel)
    )
    assert stall.wait_triggered(30)

    elapsed = _cancel_and_time(cancel, job)

    assert isinstance(job.error, DownloadCanceledError)
    assert elapsed < CANCEL_BOUND_S, f"cancel took {elapsed:.3f} s"
    assert eventually(lambda: incomplete_files(hf_cache)) == []
    assert dangling_links(hf_cache) == []
    assert eventually(download_children) == []


def test_redownload_after_cancel_fetches_only_the_missing_files(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    local_hub.rate = 8_000_000
    # One file at a time, largest first: the first shard finishes, the second is cut mid-way.
    downloader = _downloader(local_hub, hf_cache, max_parallel_files=1)
    recorder = ProgressRecorder()
    cancel = threading.Event()
    job = Background(lambda: downloader.download(small_repo, on_progress=recorder, cancel=cancel))
    assert recorder.wait_for(
        lambda p: (
            p.files_done >= 1
            and p.file.endswith("00002-of-00002.safetensors")
            and p.file_bytes_done > 100_000
        ),
        timeout=60,
    )
    _cancel_and_time(cancel, job)
    assert isinstance(job.error, DownloadCanceledError)
    kept = snapshot_files(hf_cache, small_repo)
    assert "model-00001-of-00002.safetensors" in kept
    assert "model-00002-of-00002.safetensors" not in kept

    local_hub.rate = None
    local_hub.clear_requests()
    snapshot = downloader.download(
        small_repo, on_progress=lambda _p: None, cancel=threading.Event()
    )

    fetched = file_gets(local_hub, small_repo)
    assert "model-00002-of-00002.safetensors" in fetched
    assert not set(fetched) & kept, f"re-fetched finished files: {set(fetched) & kept}"
    assert len(fetched) == len(set(fetched))
    assert downloader.is_downloaded(small_repo)
    assert (snapshot / "model-00002-of-00002.safetensors").is_file()


def test_cancel_set_before_the_call_raises_without_starting_a_process(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DownloadCanceledError):
        downloader.download(small_repo, on_progress=lambda _p: None, cancel=cancel)
    assert local_hub.requests == []


def test_close_stops_a_running_download_and_reaps_its_process(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    stall = local_hub.inject("*.safetensors", stall_after=50_000, times=None)
    downloader = _downloader(local_hub, hf_cache, stall_timeout_s=60)
    job = Background(
        lambda: downloader.download(
            small_repo, on_progress=lambda _p: None, cancel=threading.Event()
        )
    )
    assert stall.wait_triggered(30)
    assert len(download_children()) == 1

    downloader.close()
    job.join(5)

    assert isinstance(job.error, DownloadCanceledError)
    assert "closed" in str(job.error)
    assert eventually(download_children) == []
    assert eventually(lambda: incomplete_files(hf_cache)) == []


def test_cancel_while_the_process_is_still_starting_returns_within_half_a_second(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    cancel = threading.Event()
    job = Background(
        lambda: downloader.download("demo/tiny-chat", on_progress=lambda _p: None, cancel=cancel)
    )
    assert job.thread.is_alive()  # started; the child is still importing

    elapsed = _cancel_and_time(cancel, job)

    assert isinstance(job.error, DownloadCanceledError)
    assert elapsed < CANCEL_BOUND_S, f"cancel took {elapsed:.3f} s"
    assert eventually(download_children) == []


BUSY_LOOP = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"


def test_cancel_while_every_cpu_is_busy_returns_at_once_and_cleans_up_after_the_process(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    # A download process runs at SCHED_IDLE: with every CPU busy (a reply on a big model),
    # it gets almost no CPU, and even dying takes it a while. The stop must not wait for
    # that: the queue goes on, and the partial files go once the process is gone.
    local_hub.rate = 2_000_000
    downloader = _downloader(local_hub, hf_cache)
    recorder = ProgressRecorder()
    cancel = threading.Event()
    job = Background(lambda: downloader.download(small_repo, on_progress=recorder, cancel=cancel))
    assert recorder.wait_for(lambda p: p.bytes_done > 500_000, timeout=30)
    hogs = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    try:
        elapsed = _cancel_and_time(cancel, job)
        assert isinstance(job.error, DownloadCanceledError)
        assert elapsed < 1.0, f"cancel took {elapsed:.3f} s with the CPUs busy"
        # another download may start at once (it does not wait for the one stopping)
        other = Background(
            lambda: downloader.download(
                "demo/tiny-chat", on_progress=lambda _p: None, cancel=threading.Event()
            )
        )
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
    other.join(60)
    assert other.error is None
    assert downloader.wait_stopped(30)
    assert incomplete_files(hf_cache) == []
    assert dangling_links(hf_cache) == []
    assert eventually(download_children) == []
    # and the canceled model downloads again, from where its finished files left off
    downloader.download(small_repo, on_progress=lambda _p: None, cancel=threading.Event())
    assert downloader.is_downloaded(small_repo)
    downloader.close()
