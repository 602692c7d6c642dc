"""A hostile hub: file names that escape the cache, a commit id that is not one, a config that
does not match its weights. Each is refused before any weights are downloaded, and nothing
is written outside the cache."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dl_helpers import download_children, eventually, is_header_read

from chatwidget.downloads import Downloader
from chatwidget.errors import UnsafeRepoError
from chatwidget.failure import failure_of
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_REPO as TINY

ESCAPES = [
    "../../escape.json",
    "a/../../escape.json",
    "..\\escape.json",
    "./escape.json",
    "a//escape.json",
    "config.json\x00.txt",
]


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A folder that holds only the cache: anything else appearing in it escaped."""
    (tmp_path / "box" / "cache").mkdir(parents=True)
    return tmp_path / "box"


@pytest.fixture
def downloader(local_hub: LocalHub, box: Path) -> Iterator[Downloader]:
    made = Downloader(endpoint=local_hub.url, cache_dir=box / "cache", token=False)
    yield made
    made.close()
    assert eventually(download_children) == []


def weight_transfers(hub: LocalHub) -> list[str]:
    """Safetensors bodies the hub sent (header reads, made to check a config, are not)."""
    return [
        r.path
        for r in hub.requests
        if r.method == "GET" and r.path.endswith(".safetensors") and not is_header_read(r)
    ]


def files_outside_the_cache(box: Path) -> list[Path]:
    return sorted(p for p in box.rglob("*") if not p.is_relative_to(box / "cache"))


def download(downloader: Downloader, repo_id: str = TINY) -> None:
    downloader.download(repo_id, on_progress=lambda _p: None, cancel=threading.Event())


@pytest.mark.parametrize("name", ESCAPES)
def test_a_listed_file_name_that_escapes_the_cache_is_refused(
    local_hub: LocalHub, downloader: Downloader, box: Path, name: str
) -> None:
    local_hub.inject(f"/api/models/{TINY}/*", listing_extra=[name], times=None)
    with pytest.raises(UnsafeRepoError, match="outside the Hugging Face cache"):
        downloader.plan(TINY)
    with pytest.raises(UnsafeRepoError) as caught:
        download(downloader)
    assert not any("/resolve/" in r.path for r in local_hub.requests), "no file was fetched"
    assert files_outside_the_cache(box) == []
    assert not list(box.rglob("escape.json"))
    failure = failure_of(caught.value)
    assert (failure.kind, failure.retryable, failure.action) == (
        "unsafe_repo",
        False,
        "Pick another model",
    )


def test_an_absolute_file_name_is_refused(
    local_hub: LocalHub, downloader: Downloader, box: Path, tmp_path: Path
) -> None:
    target = tmp_path / f"absolute-{uuid.uuid4().hex}.json"
    local_hub.inject(f"/api/models/{TINY}/*", listing_extra=[str(target)], times=None)
    with pytest.raises(UnsafeRepoError, match="absolute path"):
        download(downloader)
    assert not target.exists()
    assert files_outside_the_cache(box) == []


@pytest.mark.parametrize("commit", ["not-a-commit", "../../../../escape", "A" * 40, "0" * 39])
def test_a_commit_id_that_is_not_one_is_refused(
    local_hub: LocalHub, downloader: Downloader, box: Path, commit: str
) -> None:
    local_hub.inject(f"*{TINY}*", commit=commit, times=None)
    with pytest.raises(UnsafeRepoError, match="invalid commit id"):
        downloader.plan(TINY)
    with pytest.raises(UnsafeRepoError, match="invalid commit id"):
        download(downloader)
    assert not any("/resolve/" in r.path for r in local_hub.requests)
    assert files_outside_the_cache(box) == []
    assert not list((box / "cache").rglob("snapshots/*"))


def _config(hub: LocalHub, **changes: object) -> None:
    config = json.loads((hub.root / TINY / "config.json").read_text())
    config.update(changes)
    hub.override_file(TINY, "config.json", json.dumps(config, indent=2))


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"vocab_size": 999}, "vocab_size is 999 but model.embed_tokens.weight has 320 rows"),
        ({"hidden_size": 64}, "the hidden size is 64 but model.embed_tokens.weight has 32"),
        ({"num_hidden_layers": 12}, "it has 12 layers but the weights have 2"),
        # sizes that match the embedding, but a model of a billion parameters to build
        ({"intermediate_size": 10_000_000}, r"about 1\.9B parameters but the weights hold"),
        ({"num_hidden_layers": 99_999_999}, "num_hidden_layers=99999999"),
        ({"vocab_size": "many"}, "vocab_size='many'"),
    ],
)
def test_a_config_that_does_not_match_its_weights_is_refused_before_the_weights(
    local_hub: LocalHub, downloader: Downloader, box: Path, changes: dict[str, object], why: str
) -> None:
    _config(local_hub, **changes)
    with pytest.raises(UnsafeRepoError, match=why):
        download(downloader)
    assert weight_transfers(local_hub) == [], "no weights were downloaded"
    assert files_outside_the_cache(box) == []
    assert not downloader.is_downloaded(TINY)


def test_an_honest_repo_still_downloads_after_the_checks(
    local_hub: LocalHub, downloader: Downloader
) -> None:
    _config(local_hub)  # the same config, served through an override
    download(downloader)
    assert downloader.is_downloaded(TINY)
    assert len(weight_transfers(local_hub)) == 1
