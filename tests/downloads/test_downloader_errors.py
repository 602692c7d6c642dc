"""Each failure class gives its own error, with a message that says what to do."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dl_helpers import (
    Background,
    ProgressRecorder,
    dangling_links,
    download_children,
    eventually,
    incomplete_files,
    is_header_read,
    snapshot_files,
)

from chatwidget.catalog import ModelSpec
from chatwidget.downloads import Downloader
from chatwidget.errors import (
    CorruptedFileError,
    DiskFullError,
    GatedRepoError,
    NetworkError,
    RepoNotFoundError,
    RevisionNotFoundError,
    ServerError,
    StalledDownloadError,
)
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_GATED_REPO as GATED_REPO
from chatwidget.testing.models import DEMO_GATED_TOKEN as GATED_TOKEN
from chatwidget.testing.models import DEMO_TINY_REPO as TINY_REPO


def _downloader(hub: LocalHub, cache: Path, **kwargs: object) -> Downloader:
    kwargs.setdefault("token", False)
    return Downloader(endpoint=hub.url, cache_dir=cache, **kwargs)  # type: ignore[arg-type]


def _download(downloader: Downloader, spec: ModelSpec | str) -> Path:
    return downloader.download(spec, on_progress=lambda _p: None, cancel=threading.Event())


def test_unknown_repo_is_repo_not_found_in_plan_and_download(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    with pytest.raises(RepoNotFoundError, match="not found") as planned:
        downloader.plan("nobody/no-such-model")
    with pytest.raises(LookupError):  # also the builtin
        _download(downloader, "nobody/no-such-model")
    assert "token" in str(planned.value)  # says what to do if it is private


def test_gated_repo_without_a_token_is_gated_error_and_with_one_downloads(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    with pytest.raises(GatedRepoError, match="accept its terms"):
        _download(downloader, GATED_REPO)

    downloader.set_token(GATED_TOKEN)  # e.g. the user logged in after the first try
    snapshot = _download(downloader, GATED_REPO)

    assert (snapshot / "config.json").is_file()
    assert GATED_TOKEN not in repr(downloader)
    served = [r for r in local_hub.requests if r.path.startswith(f"/{GATED_REPO}/resolve/")]
    assert served
    assert all(r.token_present for r in served)


def test_unknown_revision_is_revision_not_found(local_hub: LocalHub, hf_cache: Path) -> None:
    spec = ModelSpec(TINY_REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError, match="no-such-branch"):
        _download(_downloader(local_hub, hf_cache), spec)


def test_server_error_on_a_file_is_server_error(local_hub: LocalHub, hf_cache: Path) -> None:
    local_hub.inject("*/model.safetensors", method="GET", status=503)
    with pytest.raises(ServerError, match="503"):
        _download(_downloader(local_hub, hf_cache), TINY_REPO)
    assert eventually(lambda: incomplete_files(hf_cache)) == []


def test_connection_cut_while_listing_is_network_error(local_hub: LocalHub, hf_cache: Path) -> None:
    local_hub.inject("/api/models/*", drop_after=0, times=None)
    with pytest.raises(NetworkError, match="Check your network connection"):
        _download(_downloader(local_hub, hf_cache), TINY_REPO)
    assert not (hf_cache / "models--demo--tiny-chat" / "snapshots").exists()


@pytest.mark.slow
def test_connection_that_keeps_dropping_mid_file_is_network_error(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    # huggingface_hub resumes a dropped transfer 5 times (1 s apart) before it gives up.
    local_hub.inject("*/model.safetensors", drop_after=1000, times=None)
    with pytest.raises(NetworkError, match="network"):
        _download(_downloader(local_hub, hf_cache), TINY_REPO)
    assert eventually(lambda: incomplete_files(hf_cache)) == []


def test_one_dropped_connection_is_resumed_not_failed(local_hub: LocalHub, hf_cache: Path) -> None:
    local_hub.inject("*/model.safetensors", drop_after=1000, times=1, ranged=False)
    downloader = _downloader(local_hub, hf_cache)
    _download(downloader, TINY_REPO)
    assert downloader.is_downloaded(TINY_REPO)
    gets = [
        r
        for r in local_hub.requests
        if r.method == "GET" and r.path.endswith("/model.safetensors") and not is_header_read(r)
    ]
    assert len(gets) == 2  # the dropped one, then the retry huggingface_hub made
    assert gets[0].faults


def test_hub_that_stops_sending_is_stall_error_after_the_timeout(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    local_hub.inject("*.safetensors", stall_after=200_000, times=None)
    downloader = _downloader(local_hub, hf_cache, stall_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(StalledDownloadError, match="stalled"):
        _download(downloader, small_repo)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 15
    assert eventually(lambda: incomplete_files(hf_cache)) == []
    assert eventually(download_children) == []


def test_corrupted_bytes_are_caught_and_the_bad_blob_removed(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    local_hub.inject("*/model.safetensors", method="GET", corrupt=True, ranged=False)
    downloader = _downloader(local_hub, hf_cache)
    with pytest.raises(CorruptedFileError, match="sha256"):
        _download(downloader, TINY_REPO)
    assert "model.safetensors" not in snapshot_files(hf_cache, TINY_REPO)
    assert dangling_links(hf_cache) == []
    blobs = list(hf_cache.glob("models--demo--tiny-chat/blobs/*"))
    sizes = {p.stat().st_size for p in blobs}
    weights = (local_hub.root / TINY_REPO / "model.safetensors").stat().st_size
    assert weights not in sizes, "the corrupted blob must be deleted"

    _download(downloader, TINY_REPO)  # a retry with a healthy hub repairs it
    assert downloader.is_downloaded(TINY_REPO)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small RAM disk at ``path`` (needs root, as in this project's sandbox and CI)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_too_little_free_disk_is_refused_before_the_first_byte(
    local_hub: LocalHub, small_repo: str, tmp_path: Path
) -> None:
    with _tmpfs(tmp_path / "disk", "5m") as cache:
        downloader = _downloader(local_hub, cache)
        plan = downloader.plan(small_repo)  # reads the safetensors headers (Range requests)
        assert not plan.fits_on_disk
        local_hub.clear_requests()
        with pytest.raises(DiskFullError, match="GB is free"):
            _download(downloader, small_repo)
        assert not any(r.path.endswith(".safetensors") for r in local_hub.requests)


def test_disk_filling_up_mid_download_is_disk_full_and_cleaned_up(
    local_hub: LocalHub, small_repo: str, tmp_path: Path
) -> None:
    with _tmpfs(tmp_path / "disk", "40m") as cache:
        local_hub.rate = 4_000_000
        downloader = _downloader(local_hub, cache)
        recorder = ProgressRecorder()
        job = Background(
            lambda: downloader.download(small_repo, on_progress=recorder, cancel=threading.Event())
        )
        assert recorder.wait_for(lambda p: p.bytes_done > 500_000, timeout=30)
        filler = cache / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:  # fill the disk up
            while True:
                fh.write(b"\0" * (1 << 20))
        local_hub.rate = None
        job.join(30)
        filler.unlink()

        assert isinstance(job.error, DiskFullError), job.error
        assert "Free some disk space" in str(job.error)
        assert eventually(lambda: incomplete_files(cache)) == []
        assert dangling_links(cache) == []


def test_hub_that_hangs_on_the_listing_is_stall_error(local_hub: LocalHub, hf_cache: Path) -> None:
    local_hub.inject("/api/models/*", delay=8.0, times=None)
    downloader = _downloader(local_hub, hf_cache, stall_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(StalledDownloadError):
        _download(downloader, TINY_REPO)
    assert time.monotonic() - started < 8.0  # the stall timer, not the hub, ended it
    assert eventually(download_children) == []
