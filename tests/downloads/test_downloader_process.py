"""The download process: no torch, token kept private, gone when the parent is done."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import httpx2
import pytest
from dl_helpers import Background, download_children, eventually
from huggingface_hub.errors import (
    GatedRepoError as HubGatedRepoError,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from chatwidget import errors
from chatwidget.downloads import Downloader
from chatwidget.downloads.downloader import child_command
from chatwidget.downloads.errors_map import classify, describe, rebuild
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_GATED_REPO as GATED_REPO
from chatwidget.testing.models import DEMO_GATED_TOKEN as GATED_TOKEN
from chatwidget.testing.models import DEMO_TINY_REPO as TINY_REPO


def _job(hub: LocalHub, cache: Path, repo_id: str) -> dict[str, object]:
    return {
        "repo_id": repo_id,
        "revision": "main",
        "allow_patterns": ["*.json"],
        "ignore_patterns": [],
        "cache_dir": str(cache),
        "endpoint": hub.url,
        "token": False,
    }


def _run_child(job: dict[str, object]) -> tuple[int, list[dict[str, object]], str]:
    """Run the child like the Downloader does: job on stdin, which stays open until it ends."""
    proc = subprocess.Popen(
        child_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    messages = [json.loads(line) for line in proc.stdout]  # until the child closes it
    proc.stdin.close()
    code = proc.wait(timeout=60)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return code, messages, err


def test_child_process_reports_without_importing_torch(local_hub: LocalHub, hf_cache: Path) -> None:
    code, messages, stderr = _run_child(_job(local_hub, hf_cache, TINY_REPO))
    kinds = [m["kind"] for m in messages]

    assert code == 0, stderr
    assert "Warning" not in stderr
    assert kinds[0] == "ready"
    assert messages[0]["torch_loaded"] is False
    assert kinds[1] == "plan"
    assert kinds[-1] == "done"
    assert kinds.count("file_done") == len(messages[1]["files"])  # type: ignore[arg-type]


def test_child_process_reports_a_classified_error(local_hub: LocalHub, hf_cache: Path) -> None:
    code, messages, _err = _run_child(_job(local_hub, hf_cache, "nobody/missing"))
    last = messages[-1]
    assert code == 1
    assert last["kind"] == "error"
    assert last["error"] == "RepoNotFoundError"
    assert "nobody/missing" in str(last["message"])
    assert "RepositoryNotFoundError" in str(last["detail"])


def test_child_process_exits_when_its_parent_closes_the_pipe() -> None:
    proc = subprocess.Popen(
        child_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.close()  # as when the parent dies
    assert proc.wait(timeout=60) != 0


def test_token_stays_out_of_repr_argv_and_environment(local_hub: LocalHub, hf_cache: Path) -> None:
    stall = local_hub.inject("*/model.safetensors", stall_after=1000, times=None)
    downloader = Downloader(
        endpoint=local_hub.url, cache_dir=hf_cache, token=GATED_TOKEN, stall_timeout_s=60
    )
    cancel = threading.Event()
    job = Background(
        lambda: downloader.download(GATED_REPO, on_progress=lambda _p: None, cancel=cancel)
    )
    try:
        assert stall.wait_triggered(30)
        [child] = download_children()
        assert GATED_TOKEN not in " ".join(child.cmdline())
        assert GATED_TOKEN not in json.dumps(child.environ())
        assert GATED_TOKEN not in repr(downloader)
    finally:
        cancel.set()
        job.join(5)
    assert isinstance(job.error, errors.DownloadCanceledError)
    assert GATED_TOKEN not in str(job.error)


def test_finished_download_leaves_no_process(local_hub: LocalHub, hf_cache: Path) -> None:
    downloader = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False)
    downloader.download(TINY_REPO, on_progress=lambda _p: None, cancel=threading.Event())
    assert eventually(download_children) == []


def _http_error(status: int) -> HfHubHTTPError:
    request = httpx2.Request("GET", "http://hub.test/org/name/resolve/main/model.safetensors")
    return HfHubHTTPError(f"{status}", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (_http_error(500), errors.ServerError),
        (_http_error(429), errors.ServerError),
        (OSError(28, "No space left on device"), errors.DiskFullError),
        (OSError("Consistency check failed: file should be of size 10"), errors.CorruptedFileError),
        (httpx2.ConnectError("refused"), errors.NetworkError),
        (httpx2.ReadTimeout("slow"), errors.NetworkError),
        (ValueError("something else"), errors.NetworkError),
    ],
)
def test_classify_maps_client_errors_to_one_class_each(
    raised: BaseException, expected: type[errors.DownloadError]
) -> None:
    error = classify(raised, repo_id="org/name")
    assert type(error) is expected
    assert "org/name" in str(error)


def test_classify_follows_the_cause_of_a_wrapped_error() -> None:
    outer = LocalEntryNotFoundError("cannot find the requested files on the hub")
    outer.__cause__ = httpx2.ConnectError("connection refused")
    assert isinstance(classify(outer, repo_id="org/name"), errors.NetworkError)


def test_classify_tells_gated_from_not_found() -> None:
    gated = HubGatedRepoError("gated", response=_http_error(401).response)
    missing = RepositoryNotFoundError("missing", response=_http_error(404).response)
    assert isinstance(classify(gated, repo_id="o/n"), errors.GatedRepoError)
    assert isinstance(classify(missing, repo_id="o/n"), errors.RepoNotFoundError)


def test_error_round_trips_between_processes_with_class_and_message() -> None:
    original = errors.StalledDownloadError("no bytes for 30 s")
    rebuilt = rebuild(*describe(original))
    assert type(rebuilt) is errors.StalledDownloadError
    assert str(rebuilt) == "no bytes for 30 s"
    assert type(rebuild("SomethingUnknown", "x")) is errors.NetworkError


def test_progress_class_counts_each_byte_once_on_the_xet_path() -> None:
    # The Xet transfer itself cannot run here (no Xet server); its progress goes through
    # huggingface_hub's pure-Python reporter, fed by reports like these from hf_xet.
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    from chatwidget.downloads.child import ByteCounters, make_progress_class

    counters = ByteCounters()
    starts: list[int] = []
    cls = make_progress_class(counters, "model.safetensors", lambda: starts.append(1))
    reporter = XetDownloadProgressReporter(
        reconstruction_desc="x", total=1000, log_level=30, tqdm_class=cls
    )
    for written, received in ((0, 300), (400, 700), (1000, 1000)):
        reporter.update_progress(
            SimpleNamespace(
                total_bytes_completed=written,
                total_transfer_bytes_completed=received,
                total_bytes_completion_rate=None,
                total_transfer_bytes_completion_rate=None,
                total_bytes=1000,
            )
        )
    reporter.close()

    message = counters.take_if_changed()
    assert message is not None
    assert message["files"] == {"model.safetensors": 1000}
    assert message["transfer"] == 1000
    assert starts == [1]  # one bar, so one hasher


def test_prestarted_process_serves_the_next_download_and_close_reaps_it(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    downloader = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False, prestart=True)
    try:
        [spare] = download_children()
        downloader.download(TINY_REPO, on_progress=lambda _p: None, cancel=threading.Event())

        assert not spare.is_running()  # it did the download and exited
        [next_spare] = download_children()  # a fresh one waits for the next download
        assert next_spare.pid != spare.pid
        assert downloader.is_downloaded(TINY_REPO)
    finally:
        downloader.close()
    assert eventually(download_children) == []


def test_no_supervisor_threads_are_left_after_success_or_cancel(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    downloader = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False)
    downloader.download(TINY_REPO, on_progress=lambda _p: None, cancel=threading.Event())
    stall = local_hub.inject("/demo/tiny-chat-b/*/model.safetensors", stall_after=1000)
    cancel = threading.Event()
    job = Background(
        lambda: downloader.download("demo/tiny-chat-b", on_progress=lambda _p: None, cancel=cancel)
    )
    assert stall.wait_triggered(30)
    cancel.set()
    job.join(5)
    assert isinstance(job.error, errors.DownloadCanceledError)

    left = [t.name for t in threading.enumerate() if t.name.startswith("chatwidget-download")]
    assert left == []
