"""Cache status: models from any tool count as downloaded and are never fetched again."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from dl_helpers import Background, file_gets
from huggingface_hub import hf_hub_download, snapshot_download

from chatwidget.catalog import ModelSpec
from chatwidget.downloads import Downloader, DownloadProgress
from chatwidget.errors import DownloadInProgressError
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_REPO as TINY_REPO
from chatwidget.testing.models import build_model


def _downloader(hub: LocalHub, cache: Path, **kwargs: object) -> Downloader:
    return Downloader(endpoint=hub.url, cache_dir=cache, token=False, **kwargs)  # type: ignore[arg-type]


def test_model_from_plain_snapshot_download_is_downloaded_and_never_fetched_again(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    snapshot_download(TINY_REPO, endpoint=local_hub.url, cache_dir=hf_cache)
    downloader = _downloader(local_hub, hf_cache)
    local_hub.clear_requests()

    assert downloader.is_downloaded(TINY_REPO)
    [cached] = downloader.cached_models()
    sent: list[DownloadProgress] = []
    snapshot = downloader.download(TINY_REPO, on_progress=sent.append, cancel=threading.Event())

    assert local_hub.requests == []  # no request at all, not even the listing
    assert cached.repo_id == TINY_REPO
    assert cached.refs == ("main",)
    assert cached.snapshot_path == snapshot
    assert cached.size_on_disk > 100_000
    assert len(sent) == 1
    assert sent[0].final
    assert sent[0].bytes_done == sent[0].bytes_total > 0


def test_model_fetched_file_by_file_without_a_listing_counts_as_downloaded(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    # As transformers does it: hf_hub_download per file, no tree listing in the cache.
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        hf_hub_download(TINY_REPO, name, endpoint=local_hub.url, cache_dir=hf_cache)
    downloader = _downloader(local_hub, hf_cache)
    assert downloader.is_downloaded(TINY_REPO)
    assert [m.repo_id for m in downloader.cached_models()] == [TINY_REPO]


def test_snapshot_missing_a_weight_shard_is_not_downloaded(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    snapshot = Path(snapshot_download(small_repo, endpoint=local_hub.url, cache_dir=hf_cache))
    (snapshot / "model-00002-of-00002.safetensors").unlink()
    downloader = _downloader(local_hub, hf_cache)

    assert not downloader.is_downloaded(small_repo)
    assert downloader.cached_models() == []
    plan = downloader.plan(small_repo)
    missing = [f.path for f in plan.files if not f.cached]
    assert missing == ["model-00002-of-00002.safetensors"]
    assert (
        plan.missing_bytes
        == (local_hub.root / small_repo / "model-00002-of-00002.safetensors").stat().st_size
    )


def test_delete_frees_the_bytes_and_forgets_the_model(local_hub: LocalHub, hf_cache: Path) -> None:
    downloader = _downloader(local_hub, hf_cache)
    downloader.download(TINY_REPO, on_progress=lambda _p: None, cancel=threading.Event())
    [cached] = downloader.cached_models()

    freed = downloader.delete(TINY_REPO)

    assert freed >= cached.size_on_disk
    assert not downloader.is_downloaded(TINY_REPO)
    assert downloader.cached_models() == []
    assert not (hf_cache / "models--demo--tiny-chat").exists()
    assert downloader.delete(TINY_REPO) == 0  # already gone

    local_hub.clear_requests()
    downloader.download(TINY_REPO, on_progress=lambda _p: None, cancel=threading.Event())
    assert "model.safetensors" in file_gets(local_hub, TINY_REPO)  # fetched afresh


def test_delete_and_a_second_download_refuse_a_repo_that_is_downloading(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    stall = local_hub.inject("*.safetensors", stall_after=10_000, times=None)
    downloader = _downloader(local_hub, hf_cache, stall_timeout_s=60)
    cancel = threading.Event()
    job = Background(
        lambda: downloader.download(small_repo, on_progress=lambda _p: None, cancel=cancel)
    )
    assert stall.wait_triggered(30)
    try:
        with pytest.raises(DownloadInProgressError, match="cancel the download"):
            downloader.delete(small_repo)
        with pytest.raises(DownloadInProgressError, match="already downloading"):
            downloader.download(small_repo, on_progress=lambda _p: None, cancel=cancel)
    finally:
        cancel.set()
        job.join(5)


def test_default_selection_skips_duplicate_weight_formats(
    local_hub: LocalHub, tmp_path: Path, hf_cache: Path
) -> None:
    repo = "dup-org/tiny-many-formats"
    folder = build_model(local_hub.root, repo, "tiny")
    try:
        weights = (folder / "model.safetensors").read_bytes()
        (folder / "pytorch_model.bin").write_bytes(weights)
        (folder / "onnx").mkdir()
        (folder / "onnx" / "model.onnx").write_bytes(weights[:1000])
        (folder / "model.gguf").write_bytes(weights[:1000])
        downloader = _downloader(local_hub, hf_cache)

        default = {f.path for f in downloader.plan(repo).files}
        only_config = {
            f.path for f in downloader.plan(ModelSpec(repo, allow_patterns=("*.json",))).files
        }

        assert {"config.json", "model.safetensors", "tokenizer.json"} <= default
        assert "chat_template.jinja" in default
        assert not {"pytorch_model.bin", "onnx/model.onnx", "model.gguf", "README.md"} & default
        assert only_config
        assert all(p.endswith(".json") for p in only_config)
    finally:
        shutil.rmtree(folder)


def test_plan_reports_disk_and_memory_needs_before_any_byte(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    plan = downloader.plan(small_repo)
    folder = local_hub.root / small_repo
    index = json.loads((folder / "model.safetensors.index.json").read_text())

    assert plan.missing_bytes == plan.total_bytes > 0
    # fp32 weights: the headers' parameters x 4 bytes = the tensors' bytes
    assert plan.fit is not None
    assert plan.fit.option("float32").weights_bytes == index["metadata"]["total_size"]
    assert plan.parameters is not None
    assert plan.parameters * 4 == index["metadata"]["total_size"]
    assert plan.load_dtype == "float32"
    assert plan.memory_estimate_bytes == plan.fit.option("auto").model_bytes
    assert plan.memory_estimate_bytes > index["metadata"]["total_size"]  # + KV cache etc.
    assert plan.disk_free_bytes > 0
    assert plan.fits_on_disk
    assert all(f.sha256 for f in plan.files if f.path.endswith(".safetensors"))
    assert len(plan.commit) == 40
    weights = [r for r in local_hub.requests if r.path.endswith(".safetensors")]
    assert {r.status for r in weights} == {206}, "only the headers were read, with Range"
    assert not list(hf_cache.glob("**/*.safetensors"))


def test_plan_estimate_follows_the_dtype_the_config_names(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    repo = "dtype-org/tiny-bf16-config"
    folder = build_model(local_hub.root, repo, "tiny")
    try:
        config = json.loads((folder / "config.json").read_text())
        config["dtype"] = "bfloat16"  # weights are saved in fp32, loading casts to bf16
        (folder / "config.json").write_text(json.dumps(config))
        plan = _downloader(local_hub, hf_cache).plan(repo)  # config read from the hub

        assert plan.fit is not None
        assert plan.load_dtype == "bfloat16"
        auto, fp32 = plan.fit.option("auto"), plan.fit.option("float32")
        assert auto.weights_bytes * 2 == fp32.weights_bytes
        assert plan.memory_estimate_bytes == auto.model_bytes
    finally:
        shutil.rmtree(folder)
