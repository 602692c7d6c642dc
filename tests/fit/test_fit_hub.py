"""The estimate before a download, on the real path: Range reads of the local hub's headers,
the plan's figures, and the refusals before the first byte and before a load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.downloads import Downloader
from chatwidget.engine import Engine
from chatwidget.engine.loader import find_in_cache
from chatwidget.errors import ModelTooLargeError
from chatwidget.fit.facts import SOURCE_HEADERS, SOURCE_HUB_SUMMARY
from chatwidget.orchestrator import ErrorReported, ModelState, Orchestrator, StateChanged
from chatwidget.testing.hub import LocalHub, RequestRecord
from tests.orchestrator.orch_fakes import Recorder

WAIT_S = 60.0


def _downloader(hub: LocalHub, cache: Path) -> Downloader:
    return Downloader(endpoint=hub.url, cache_dir=cache, token=False)


def _mib(n: int) -> str:
    """Bytes as the engine's messages write them."""
    return f"{n / 2**20:,.0f} MiB"


def _weights_requests(hub: LocalHub) -> list[RequestRecord]:
    return [r for r in hub.requests if r.path.endswith(".safetensors")]


def test_plan_reads_the_headers_with_range_requests_and_matches_the_cached_files(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    try:
        plan = downloader.plan(small_repo)
    finally:
        downloader.close()
    reads = _weights_requests(local_hub)
    shards = {f.path: f.size for f in plan.files if f.path.endswith(".safetensors")}
    assert {r.path.rsplit("/", 1)[1] for r in reads} == set(shards)  # every shard's header
    assert all(r.method == "GET" and r.range is not None and r.status == 206 for r in reads)
    for read in reads:
        assert read.bytes_sent < shards[read.path.rsplit("/", 1)[1]] / 10  # the header only
    assert plan.fit is not None
    assert plan.fit.source == SOURCE_HEADERS
    assert not list(hf_cache.glob("**/*.safetensors")), "no weights fetched"

    snapshot_download(small_repo, cache_dir=hf_cache, endpoint=local_hub.url)
    cached = find_in_cache(ModelSpec(small_repo), hf_cache)
    after = fit.estimate_files(small_repo, cached.config_path, cached.weight_files)
    assert after.as_dict() == {**plan.fit.as_dict(), "commit": None}  # one estimate, two sources


def test_huggingface_hub_reads_the_same_headers_from_the_local_hub(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    meta = HfApi(endpoint=local_hub.url).get_safetensors_metadata(small_repo)
    downloader = _downloader(local_hub, hf_cache)
    try:
        plan = downloader.plan(small_repo)
    finally:
        downloader.close()
    assert meta.sharded
    assert sum(meta.parameter_count.values()) == plan.parameters


def test_unreadable_headers_fall_back_to_the_hub_summary_and_the_plan_goes_on(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    local_hub.inject("*.safetensors", method="GET", status=500, times=None, ranged=True)
    downloader = _downloader(local_hub, hf_cache)
    try:
        plan = downloader.plan(small_repo)
    finally:
        downloader.close()
    assert plan.fit is not None
    assert plan.fit.source == SOURCE_HUB_SUMMARY
    assert any("headers could not be read" in note for note in plan.fit.notes)
    assert plan.parameters is not None
    assert plan.fit.option("float32").weights_bytes == plan.parameters * 4


def test_a_second_plan_of_the_same_commit_reads_nothing_again(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    try:
        first = downloader.plan(small_repo)
        local_hub.clear_requests()
        second = downloader.plan(small_repo)
    finally:
        downloader.close()
    assert _weights_requests(local_hub) == []
    assert not any(r.path.endswith("config.json") for r in local_hub.requests)
    assert second.fit == first.fit


def test_plan_refuses_a_model_too_big_for_the_budget_before_the_first_byte(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    probe = _downloader(local_hub, hf_cache)
    try:
        expected = probe.plan(small_repo)
    finally:
        probe.close()
    assert expected.fit is not None
    weights = expected.fit.option("auto").weights_bytes
    # more than the weights, less than weights + KV cache + activations + tokenizer
    budget = weights + (expected.memory_estimate_bytes - weights) // 2
    downloader = _downloader(local_hub, hf_cache)
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=budget)
    orch = Orchestrator(downloader, engine)
    recorder = Recorder()
    orch.subscribe(recorder)
    local_hub.clear_requests()
    try:
        orch.open_conversation("c1")
        orch.request_model("c1", small_repo)
        recorder.wait_for(
            lambda events: any(
                isinstance(e, StateChanged) and e.new is ModelState.FAILED for e in events
            ),
            WAIT_S,
        )
        error = orch.snapshot().models[small_repo].error or ""
        assert f"needs about {_mib(expected.memory_estimate_bytes)}" in error
        assert "memory_budget_bytes" in error
        assert [e.repo_id for e in recorder.of(ErrorReported)] == [small_repo]
        assert all(r.range is not None for r in _weights_requests(local_hub)), "headers only"
        assert not list(hf_cache.glob("**/*.safetensors"))
        assert engine.estimate_memory(ModelSpec(small_repo)) == expected.memory_estimate_bytes
    finally:
        orch.close()
        downloader.close()
        engine.close()


def test_before_download_the_spec_dtype_decides_the_fit(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    downloader = _downloader(local_hub, hf_cache)
    try:
        plan = downloader.plan(ModelSpec(small_repo, dtype="bfloat16"))
    finally:
        downloader.close()
    assert plan.fit is not None
    bf16, fp32 = plan.fit.option("bfloat16"), plan.fit.option("float32")
    assert plan.memory_estimate_bytes == bf16.model_bytes
    assert plan.load_dtype == "bfloat16"
    engine = Engine(
        cache_dir=hf_cache, memory_budget_bytes=(bf16.model_bytes + fp32.model_bytes) // 2
    )
    assert engine.check_fit(ModelSpec(small_repo, dtype="bfloat16")).fits
    refused = engine.check_fit(ModelSpec(small_repo, dtype="float32"))
    assert not refused.fits
    assert refused.required_bytes == fp32.model_bytes


def test_engine_refuses_a_precision_that_does_not_fit_before_loading_and_loads_one_that_does(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    assert fit.estimate_cached(ModelSpec(small_repo), hf_cache) is None
    snapshot_download(small_repo, cache_dir=hf_cache, endpoint=local_hub.url)
    model = fit.estimate_cached(ModelSpec(small_repo), hf_cache)
    assert model is not None
    bf16, fp32 = model.option("bfloat16"), model.option("float32")
    engine = Engine(
        cache_dir=hf_cache, memory_budget_bytes=(bf16.model_bytes + fp32.model_bytes) // 2
    )
    try:
        with pytest.raises(ModelTooLargeError, match=f"needs about {_mib(fp32.model_bytes)}"):
            engine.load(ModelSpec(small_repo, dtype="float32"))
        assert engine.loaded_models() == []
        report = engine.load(ModelSpec(small_repo, dtype="bfloat16"))
        assert report.estimated_bytes == bf16.model_bytes
        assert engine.loaded_models() == [small_repo]
    finally:
        engine.close()


def test_a_sharded_checkpoint_counts_only_the_shards_its_index_names(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    repo = "fit-org/shards-and-consolidated"
    source, folder = local_hub.root / small_repo, local_hub.root / repo
    shutil.copytree(source, folder)
    try:
        first = sorted(folder.glob("model-*.safetensors"))[0]
        shutil.copyfile(first, folder / "consolidated.safetensors")  # Mistral-style duplicate
        downloader = _downloader(local_hub, hf_cache)
        try:
            plan = downloader.plan(repo)
        finally:
            downloader.close()
        assert plan.fit is not None
        assert any(f.path == "consolidated.safetensors" for f in plan.files)
        read = {r.path.rsplit("/", 1)[1] for r in _weights_requests(local_hub)}
        assert "consolidated.safetensors" not in read
        snapshot_download(repo, cache_dir=hf_cache, endpoint=local_hub.url)
        after = fit.estimate_cached(ModelSpec(repo), hf_cache)
        assert after is not None
        assert after.option("auto").weights_bytes == plan.fit.option("auto").weights_bytes
    finally:
        shutil.rmtree(folder)
