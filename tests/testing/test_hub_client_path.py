"""huggingface_hub's real download path against the local hub: files, progress, errors, resume."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import pytest
from tqdm.auto import tqdm

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_GATED_TOKEN

TINY = "demo/tiny-chat"
GATED = "gated/tiny-chat"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RecordingBar(tqdm):  # type: ignore[type-arg]
    """A silent tqdm that records each bar's total and every update it gets."""

    bars: ClassVar[list[RecordingBar]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True  # silent; a disabled tqdm does not count, so we do
        super().__init__(*args, **kwargs)
        self.updates: list[int] = []
        RecordingBar.bars.append(self)

    def update(self, n: float | None = 1) -> bool | None:
        self.updates.append(int(n or 0))
        return super().update(n)


@pytest.fixture
def recording_bar() -> type[RecordingBar]:
    RecordingBar.bars = []
    return RecordingBar


def test_snapshot_download_fetches_every_file_byte_for_byte(
    hf_endpoint: str, hf_cache: Path, hub_root: Path
) -> None:
    from huggingface_hub import HfApi, snapshot_download

    folder = Path(snapshot_download(TINY))
    source = hub_root / TINY
    expected = {p.name for p in source.iterdir() if not p.name.startswith(".")}
    assert {p.name for p in folder.iterdir()} == expected
    for name in expected:
        assert _sha256(folder / name) == _sha256(source / name), name
    commit = HfApi().model_info(TINY).sha
    assert folder.name == commit
    assert folder.is_relative_to(hf_cache)


def test_second_snapshot_download_only_asks_for_metadata(
    hf_endpoint: str, local_hub: LocalHub
) -> None:
    from huggingface_hub import snapshot_download

    first = snapshot_download(TINY)
    local_hub.clear_requests()
    assert snapshot_download(TINY) == first
    assert not [r for r in local_hub.requests if r.method == "GET" and "/resolve/" in r.path]


def test_hf_hub_download_reports_per_file_byte_progress(
    hf_endpoint: str,
    hub_root: Path,
    small_repo: str,
    recording_bar: type[RecordingBar],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from huggingface_hub import constants, hf_hub_download

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024 * 1024)
    shards = sorted(p.name for p in (hub_root / small_repo).glob("*.safetensors"))
    for name in shards:
        path = Path(hf_hub_download(small_repo, name, tqdm_class=recording_bar))
        assert _sha256(path) == _sha256(hub_root / small_repo / name)
    assert len(recording_bar.bars) == len(shards)
    for bar, name in zip(recording_bar.bars, shards, strict=True):
        size = (hub_root / small_repo / name).stat().st_size
        assert bar.total == size
        assert sum(bar.updates) == size
        assert len(bar.updates) >= size // (1024 * 1024)  # many steps, not one jump
        assert all(n > 0 for n in bar.updates)


def test_dry_run_lists_files_and_sizes_for_per_file_progress(
    hf_endpoint: str, hub_root: Path
) -> None:
    from huggingface_hub import snapshot_download

    infos = snapshot_download(TINY, dry_run=True)
    assert isinstance(infos, list)
    sizes = {info.filename: info.file_size for info in infos}
    on_disk = {
        p.name: p.stat().st_size for p in (hub_root / TINY).iterdir() if not p.name.startswith(".")
    }
    assert sizes == on_disk
    assert all(info.will_download for info in infos)


def test_missing_repo_raises_repository_not_found(hf_endpoint: str) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError) as info:
        snapshot_download("nobody/nothing")
    assert not isinstance(info.value, GatedRepoError)


def test_gated_repo_without_token_raises_gated_repo_error(
    hf_endpoint: str, local_hub: LocalHub
) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError

    with pytest.raises(GatedRepoError):
        snapshot_download(GATED)
    with pytest.raises(GatedRepoError):
        hf_hub_download(GATED, "config.json", token="hf_wrong")
    assert [r.status for r in local_hub.requests if "gated" in r.path] == [401, 401]


def test_gated_repo_with_the_right_token_downloads(
    hf_endpoint: str, local_hub: LocalHub, hub_root: Path
) -> None:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(GATED, token=DEMO_GATED_TOKEN))
    assert _sha256(folder / "model.safetensors") == _sha256(hub_root / GATED / "model.safetensors")
    assert all(r.token_present and r.status == 200 for r in local_hub.requests)


def test_gated_repo_with_token_from_env(hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import hf_hub_download

    monkeypatch.setenv("HF_TOKEN", DEMO_GATED_TOKEN)
    assert Path(hf_hub_download(GATED, "config.json")).is_file()


def test_missing_revision_raises_revision_not_found(hf_endpoint: str) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import RevisionNotFoundError

    with pytest.raises(RevisionNotFoundError):
        snapshot_download(TINY, revision="v9.9")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(TINY, "config.json", revision="v9.9")


def test_missing_file_raises_remote_entry_not_found(hf_endpoint: str) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(TINY, "missing.json")


def test_server_error_on_a_file_raises_http_error_without_retry(
    hf_endpoint: str, local_hub: LocalHub
) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    local_hub.inject("*/config.json", method="GET", status=503)
    with pytest.raises(HfHubHTTPError) as info:
        hf_hub_download(TINY, "config.json")
    assert info.value.response is not None
    assert info.value.response.status_code == 503
    gets = [r for r in local_hub.requests if r.method == "GET" and r.path.endswith("config.json")]
    assert len(gets) == 1


def test_rate_limited_file_is_retried_and_succeeds(hf_endpoint: str, local_hub: LocalHub) -> None:
    from huggingface_hub import hf_hub_download

    local_hub.inject("*/config.json", method="GET", status=429)
    assert Path(hf_hub_download(TINY, "config.json")).is_file()
    gets = [r for r in local_hub.requests if r.method == "GET" and r.path.endswith("config.json")]
    assert [r.status for r in gets] == [429, 200]


def test_connection_dropped_mid_file_resumes_with_range_in_one_call(
    hf_endpoint: str, local_hub: LocalHub, hub_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants, hf_hub_download

    chunk = 8192
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    drop_at = 50_000
    fault = local_hub.inject("*/model.safetensors", drop_after=drop_at)
    path = Path(hf_hub_download(TINY, "model.safetensors"))
    assert fault.fired == 1
    assert _sha256(path) == _sha256(hub_root / TINY / "model.safetensors")
    gets = [r for r in local_hub.requests if r.method == "GET" and r.path.endswith(".safetensors")]
    assert len(gets) == 2
    first, resumed = gets
    assert (first.status, first.bytes_sent, first.faults) == (200, drop_at, ("drop",))
    written = drop_at // chunk * chunk  # the client keeps whole chunks
    assert resumed.range == f"bytes={written}-"
    assert resumed.status == 206
    size = (hub_root / TINY / "model.safetensors").stat().st_size
    assert resumed.bytes_sent == size - written
    assert not list(Path(constants.HF_HUB_CACHE).rglob("*.incomplete"))


def test_corrupted_bytes_are_not_detected_by_the_client(
    hf_endpoint: str, local_hub: LocalHub, hub_root: Path
) -> None:
    """huggingface_hub does not verify sha256 on plain HTTP; callers must not rely on it."""
    from huggingface_hub import hf_hub_download

    local_hub.inject("*/model.safetensors", corrupt=True)
    path = Path(hf_hub_download(TINY, "model.safetensors"))
    assert path.read_bytes()[16:] == (hub_root / TINY / "model.safetensors").read_bytes()[16:]
    assert _sha256(path) != _sha256(hub_root / TINY / "model.safetensors")
