"""The engine's memory estimates (chatwidget.fit at the spec's precision), the default budget, and
the eviction planner."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import psutil
import pytest
import torch

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine
from chatwidget.engine.loader import LoadedModel, find_in_cache
from chatwidget.engine.pool import WarmPool
from chatwidget.errors import ModelNotDownloadedError, PrecisionUnavailableError
from tests.engine.helpers import TINY_A, TINY_B


def test_estimate_counts_exactly_the_bytes_of_the_loaded_parameters(engine: Engine) -> None:
    spec = ModelSpec(TINY_A)
    cached = find_in_cache(spec, engine.cache_dir)
    estimate = fit.estimate_files(TINY_A, cached.config_path, cached.weight_files)
    engine.load(spec)
    model = engine.model_and_tokenizer(TINY_A)[0]
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert estimate.option("auto").weights_bytes == param_bytes
    assert engine.estimate_memory(spec) == estimate.option("auto").model_bytes


def test_estimate_follows_the_spec_dtype_and_the_loader_loads_it(engine: Engine) -> None:
    fp32, bf16 = ModelSpec(TINY_A), ModelSpec(TINY_B, dtype="bfloat16")
    cached = find_in_cache(bf16, engine.cache_dir)
    estimate = fit.estimate_files(TINY_B, cached.config_path, cached.weight_files)
    assert estimate.option("bfloat16").weights_bytes * 2 == estimate.option("float32").weights_bytes
    assert engine.estimate_memory(bf16) == estimate.option("bfloat16").model_bytes
    assert engine.estimate_memory(bf16) < engine.estimate_memory(fp32)
    report = engine.load(bf16)
    assert report.estimated_bytes == engine.estimate_memory(bf16)
    model = engine.model_and_tokenizer(TINY_B)[0]
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_estimate_follows_the_dtype_named_in_the_config(engine_cache: Path, tmp_path: Path) -> None:
    cached = find_in_cache(ModelSpec(TINY_A), engine_cache)
    config = json.loads(cached.config_path.read_text())
    config["dtype"] = "bfloat16"
    half_config = tmp_path / "config.json"
    half_config.write_text(json.dumps(config))
    stored = fit.estimate_files(TINY_A, cached.config_path, cached.weight_files)
    half = fit.estimate_files(TINY_A, half_config, cached.weight_files)
    assert half.option("auto").dtype == "bfloat16"
    assert half.option("auto").weights_bytes * 2 == stored.option("auto").weights_bytes


def test_estimate_of_an_uncached_model_uses_its_catalog_size(engine: Engine) -> None:
    spec = ModelSpec("test-org/not-here", size_bytes=100_000_000)
    expected = fit.estimate_size(spec.repo_id, 100_000_000).option("auto").model_bytes
    assert engine.estimate_memory(spec) == expected
    assert 100_000_000 < expected < 110_000_000
    with pytest.raises(ModelNotDownloadedError):
        engine.estimate_memory(ModelSpec("test-org/not-here"))


def test_quantized_spec_is_refused_where_bitsandbytes_or_cuda_is_missing(engine: Engine) -> None:
    spec = ModelSpec(TINY_A, quantization="8bit")
    if fit.probe().quantization_unavailable is None:  # CUDA and bitsandbytes: it is offered
        assert engine.estimate_memory(spec) < engine.estimate_memory(ModelSpec(TINY_A))
        return
    with pytest.raises(PrecisionUnavailableError, match="CUDA") as caught:
        engine.estimate_memory(spec)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(PrecisionUnavailableError):
        engine.load(spec)
    assert engine.loaded_models() == []


def test_truncated_safetensors_file_is_rejected(tmp_path: Path, engine_cache: Path) -> None:
    cached = find_in_cache(ModelSpec(TINY_A), engine_cache)
    broken = tmp_path / "model.safetensors"
    shutil.copyfile(cached.weight_files[0], broken)
    broken.write_bytes(broken.read_bytes()[:4])
    with pytest.raises(ValueError, match="too short"):
        fit.facts_from_files(TINY_A, cached.config_path, [broken])


def test_default_budget_is_half_of_the_memory_free_at_start(engine_cache: Path) -> None:
    before = psutil.virtual_memory().available
    budget = Engine(cache_dir=engine_cache).memory_budget_bytes
    after = psutil.virtual_memory().available
    low, high = sorted((before, after))
    # generous bounds: other processes on the machine move free memory around
    assert 0.4 * low <= budget <= 0.6 * high


def test_non_positive_budget_is_rejected(engine_cache: Path) -> None:
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        Engine(cache_dir=engine_cache, memory_budget_bytes=0)


def _entry(repo_id: str, size: int) -> LoadedModel:
    """A pool entry for bookkeeping tests: the planner only reads ids and sizes."""
    return LoadedModel(
        spec=ModelSpec(repo_id), model=object(), tokenizer=object(), memory_bytes=size,
        device_map={"": "cpu"}, generate_lock=threading.Lock(),
    )  # fmt: skip


def test_plan_evicts_least_recently_used_first_until_it_fits() -> None:
    pool = WarmPool()
    for name in ("a/one", "a/two", "a/three"):
        pool.add(_entry(name, 100))
    pool.touch("a/one")  # LRU order: two, three, one
    plan = pool.plan(150, budget=400, physical_free=10_000, keep=())
    assert plan.fits
    assert plan.evict == ("a/two",)
    plan = pool.plan(250, budget=400, physical_free=10_000, keep=())
    assert plan.evict == ("a/two", "a/three")


def test_plan_skips_kept_models_and_refuses_when_they_are_in_the_way() -> None:
    pool = WarmPool()
    pool.add(_entry("a/one", 100))
    pool.add(_entry("a/two", 100))
    plan = pool.plan(250, budget=350, physical_free=10_000, keep={"a/one"})
    assert plan.fits
    assert plan.evict == ("a/two",)
    refused = pool.plan(300, budget=350, physical_free=10_000, keep={"a/one"})
    assert not refused.fits
    assert refused.evict == ()
    assert refused.available_bytes == 250


def test_plan_counts_physically_free_memory_and_what_evictions_free() -> None:
    pool = WarmPool()
    pool.add(_entry("a/one", 100))
    # the budget is large, but only 50 bytes are free in RAM: evicting one frees 100 more
    plan = pool.plan(120, budget=10_000, physical_free=50, keep=())
    assert plan.evict == ("a/one",)
    assert not pool.plan(200, budget=10_000, physical_free=50, keep=()).fits
