"""Memory estimates from safetensors headers, the default budget, and the eviction planner."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import psutil
import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine, memory
from chatwidget.engine.loader import LoadedModel, find_in_cache
from chatwidget.engine.pool import WarmPool
from chatwidget.errors import ModelNotDownloadedError
from tests.engine.helpers import TINY_A


def test_estimate_matches_the_bytes_of_the_loaded_parameters(engine: Engine) -> None:
    spec = ModelSpec(TINY_A)
    cached = find_in_cache(spec, engine.cache_dir)
    weights = memory.weights_bytes(cached.weight_files, cached.config_path)
    engine.load(spec)
    model = engine.model_and_tokenizer(TINY_A)[0]
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert weights == param_bytes
    assert engine.estimate_memory(spec) == memory.with_runtime_overhead(weights)


def test_estimate_follows_the_dtype_named_in_the_config(engine_cache: Path, tmp_path: Path) -> None:
    cached = find_in_cache(ModelSpec(TINY_A), engine_cache)
    stored = memory.weights_bytes(cached.weight_files, None)
    config = json.loads(cached.config_path.read_text())
    config["dtype"] = "bfloat16"
    half_config = tmp_path / "config.json"
    half_config.write_text(json.dumps(config))
    assert memory.weights_bytes(cached.weight_files, half_config) == stored // 2


def test_estimate_of_an_uncached_model_uses_its_catalog_size(engine: Engine) -> None:
    spec = ModelSpec("test-org/not-here", size_bytes=100_000_000)
    assert engine.estimate_memory(spec) == memory.with_runtime_overhead(100_000_000)
    with pytest.raises(ModelNotDownloadedError):
        engine.estimate_memory(ModelSpec("test-org/not-here"))


def test_truncated_safetensors_file_is_rejected(tmp_path: Path, engine_cache: Path) -> None:
    cached = find_in_cache(ModelSpec(TINY_A), engine_cache)
    broken = tmp_path / "model.safetensors"
    shutil.copyfile(cached.weight_files[0], broken)
    broken.write_bytes(broken.read_bytes()[:4])
    with pytest.raises(ValueError, match="too short"):
        memory.safetensors_tensor_bytes(broken)


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
