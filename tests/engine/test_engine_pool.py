"""Loading, the warm pool and the memory policy, on real tiny models."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine
from chatwidget.engine import engine as engine_module
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.types import GenerationSettings, LoadReport
from chatwidget.errors import ModelLoadError, ModelNotDownloadedError, ModelTooLargeError
from tests.engine.helpers import DEADLINE_S, PICKLE_ONLY, TINY_A, TINY_B, TINY_C, USER_TURN


class LoadSpy:
    """Wraps the real ``load_from_cache``: counts calls and concurrency, can hold a load."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[str] = []
        self.active = 0
        self.max_active = 0
        self.hold_first = hold_first
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._real = engine_module.load_from_cache

    def __call__(self, cached: Any, **kwargs: Any) -> LoadedModel:
        with self._lock:
            self.calls.append(cached.spec.repo_id)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            first = len(self.calls) == 1
        try:
            if first and self.hold_first:
                self.entered.set()
                assert self.release.wait(DEADLINE_S)
            return self._real(cached, **kwargs)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def load_spy(monkeypatch: pytest.MonkeyPatch) -> LoadSpy:
    spy = LoadSpy()
    monkeypatch.setattr(engine_module, "load_from_cache", spy)
    return spy


def _engine_for(cache: Path, models: float) -> Engine:
    """An engine whose budget holds ``models`` tiny models."""
    estimate = Engine(cache_dir=cache, memory_budget_bytes=1).estimate_memory(ModelSpec(TINY_A))
    return Engine(cache_dir=cache, memory_budget_bytes=int(estimate * models))


def test_load_reports_compiling_duration_memory_and_device(engine: Engine) -> None:
    spec = ModelSpec(TINY_A)
    report = engine.load(spec)
    assert report.repo_id == TINY_A
    assert report.duration_s > 0
    assert report.memory_bytes >= 0
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert set(report.device_map.values()) == {device}
    assert report.estimated_bytes == engine.estimate_memory(spec)
    assert (report.cold_swap, report.evicted, report.already_loaded) == (False, (), False)
    assert engine.is_loaded(TINY_A)
    assert engine.loaded_models() == [TINY_A]
    model = engine.model_and_tokenizer(TINY_A)[0]
    assert model.name_or_path == TINY_A
    assert {str(p.device) for p in model.parameters()} == {device}


def test_model_missing_from_the_cache_says_to_download_it(engine: Engine) -> None:
    with pytest.raises(ModelNotDownloadedError, match="Download it first") as caught:
        engine.load(ModelSpec("test-org/never-downloaded"))
    assert isinstance(caught.value, FileNotFoundError)
    assert engine.loaded_models() == []


def test_revision_missing_from_the_cache_is_not_downloaded(engine: Engine) -> None:
    with pytest.raises(ModelNotDownloadedError, match="v9"):
        engine.load(ModelSpec(TINY_A, revision="v9"))


def test_weights_missing_from_the_snapshot_are_reported(engine_cache: Path, tmp_path: Path) -> None:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(engine_cache, cache, symlinks=True)
    snapshot = next((cache / "models--test-org--tiny-a" / "snapshots").iterdir())
    (snapshot / "model.safetensors").unlink()
    engine = Engine(cache_dir=cache, memory_budget_bytes=1 << 30)
    with pytest.raises(ModelNotDownloadedError, match="safetensors"):
        engine.load(ModelSpec(TINY_A))


def test_pickle_weights_are_refused_unless_the_spec_opts_in(
    engine: Engine, load_spy: LoadSpy
) -> None:
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        engine.load(ModelSpec(PICKLE_ONLY))
    assert load_spy.calls == [], "refused before transformers saw the file"

    report = engine.load(ModelSpec(PICKLE_ONLY, allow_pickle=True))
    assert report.estimated_bytes > 0
    result = engine.generate(PICKLE_ONLY, USER_TURN, GenerationSettings(max_new_tokens=3))
    assert result.usage.new_tokens == 3


def test_model_that_cannot_fit_the_budget_is_refused_before_loading(
    engine_cache: Path, load_spy: LoadSpy
) -> None:
    engine = _engine_for(engine_cache, 0.5)
    spec = ModelSpec(TINY_A)
    fit = engine.check_fit(spec)
    assert not fit.fits
    assert fit.required_bytes == engine.estimate_memory(spec)
    assert fit.available_bytes == engine.memory_budget_bytes
    with pytest.raises(ModelTooLargeError, match=r"ChatWidget\(memory_budget=") as caught:
        engine.load(spec)
    assert isinstance(caught.value, MemoryError)
    assert load_spy.calls == [], "refused before anything was loaded"
    assert engine.loaded_models() == []


def test_switching_back_to_a_warm_model_is_instant_and_reloads_nothing(
    engine: Engine, load_spy: LoadSpy
) -> None:
    engine.load(ModelSpec(TINY_A))
    model_a = engine.model_and_tokenizer(TINY_A)[0]
    engine.load(ModelSpec(TINY_B))

    again = engine.load(ModelSpec(TINY_A))

    assert again.already_loaded
    assert again.duration_s == 0
    assert load_spy.calls == [TINY_A, TINY_B]
    assert engine.model_and_tokenizer(TINY_A)[0] is model_a
    assert engine.loaded_models() == [TINY_B, TINY_A]  # A is now the most recently used


def test_pool_evicts_the_least_recently_used_model_and_reports_it(engine_cache: Path) -> None:
    engine = _engine_for(engine_cache, 2.5)
    evicted: list[str] = []
    engine.on_evict(evicted.append)
    engine.load(ModelSpec(TINY_A))
    engine.load(ModelSpec(TINY_B))
    engine.generate(TINY_A, USER_TURN, GenerationSettings(max_new_tokens=2))  # A is used: B is LRU

    report = engine.load(ModelSpec(TINY_C))

    assert report.evicted == (TINY_B,)
    assert not report.cold_swap
    assert evicted == [TINY_B]
    assert engine.loaded_models() == [TINY_A, TINY_C]
    engine.close()


def test_models_in_keep_are_never_evicted(engine_cache: Path) -> None:
    engine = _engine_for(engine_cache, 1.5)
    evicted: list[str] = []
    engine.on_evict(evicted.append)
    engine.load(ModelSpec(TINY_A))

    fit = engine.check_fit(ModelSpec(TINY_B), keep=[TINY_A])
    assert not fit.fits
    with pytest.raises(ModelTooLargeError, match=TINY_A):
        engine.load(ModelSpec(TINY_B), keep=[TINY_A])

    assert engine.loaded_models() == [TINY_A]
    assert evicted == []
    engine.close()


def test_cold_swap_unloads_the_old_model_first_and_says_so(engine_cache: Path) -> None:
    engine = _engine_for(engine_cache, 1.5)
    evicted: list[str] = []
    engine.on_evict(evicted.append)
    engine.load(ModelSpec(TINY_A))

    fit = engine.check_fit(ModelSpec(TINY_B))
    assert fit.fits
    assert not fit.fits_beside_loaded
    report = engine.load(ModelSpec(TINY_B))

    assert report.cold_swap
    assert report.evicted == (TINY_A,)
    assert evicted == [TINY_A]
    assert engine.loaded_models() == [TINY_B]
    engine.close()


def test_evict_callback_failure_does_not_break_the_load(engine_cache: Path) -> None:
    engine = _engine_for(engine_cache, 1.5)

    def broken(repo_id: str) -> None:
        raise RuntimeError("ui gone")

    seen: list[str] = []
    engine.on_evict(broken)
    engine.on_evict(seen.append)
    engine.load(ModelSpec(TINY_A))
    report = engine.load(ModelSpec(TINY_B))
    assert report.evicted == (TINY_A,)
    assert seen == [TINY_A]
    engine.close()


def test_only_one_load_runs_at_a_time_and_queries_answer_meanwhile(
    engine_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = LoadSpy(hold_first=True)
    monkeypatch.setattr(engine_module, "load_from_cache", spy)
    engine = Engine(cache_dir=engine_cache, memory_budget_bytes=1 << 30)
    reports: list[LoadReport] = []
    first = threading.Thread(target=lambda: reports.append(engine.load(ModelSpec(TINY_A))))
    second = threading.Thread(target=lambda: reports.append(engine.load(ModelSpec(TINY_B))))
    first.start()
    try:
        assert spy.entered.wait(DEADLINE_S)  # the first load is in from_pretrained
        second.start()
        # the kernel's main thread is not blocked by the load in progress
        assert engine.loaded_models() == []
        assert not engine.is_loaded(TINY_A)
        assert engine.check_fit(ModelSpec(TINY_B)).fits
        second.join(0.2)
        assert second.is_alive(), "the second load waits for the first"
        assert spy.calls == [TINY_A]
    finally:
        spy.release.set()
        first.join(DEADLINE_S)
        second.join(DEADLINE_S)
    assert spy.max_active == 1
    assert [r.repo_id for r in reports] == [TINY_A, TINY_B]
    assert engine.loaded_models() == [TINY_A, TINY_B]
    engine.close()


def test_loading_and_replying_send_nothing_to_a_reachable_hub(
    hf_endpoint: str, local_hub: Any, hf_cache: Path
) -> None:
    from huggingface_hub import snapshot_download

    from chatwidget.testing.models import DEMO_TINY_REPO

    snapshot_download(DEMO_TINY_REPO, cache_dir=hf_cache)  # through the hub, as a user would
    local_hub.clear_requests()
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=1 << 30)
    engine.load(ModelSpec(DEMO_TINY_REPO))
    engine.generate(DEMO_TINY_REPO, USER_TURN, GenerationSettings(max_new_tokens=3))
    engine.close()
    assert local_hub.requests == [], "loading must read the local cache only"
