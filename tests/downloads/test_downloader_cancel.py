"""Cancel: stops within 0.5 s (even on a stalled server), keeps finished files, cleans the rest."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from dl_helpers import (
    Background,
    ProgressRecorder,
    dangling_links,
    download_children,
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
    assert incomplete_files(hf_cache) == []
    assert dangling_links(hf_cache) == []
    assert download_children() == []
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
    assert incomplete_files(hf_cache) == []
    assert dangling_links(hf_cache) == []
    assert download_children() == []


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
    assert download_children() == []
    assert incomplete_files(hf_cache) == []


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
    assert download_children() == []
