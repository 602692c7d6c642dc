"""Residency on real tiny models: a reply pins its model, unloaded memory counts until it is
really gone, model limits, close during a load, where a model sits."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine
from chatwidget.engine import engine as engine_module
from chatwidget.engine.loader import LoadedModel, placement_of
from chatwidget.engine.types import GenerationResult, GenerationSettings
from chatwidget.errors import EngineClosedError, ModelBusyError
from tests.engine.helpers import DEADLINE_S, TINY_A, TINY_B, TINY_C, USER_TURN, StepGate

LONG = GenerationSettings(max_new_tokens=64)


def _engine_for(cache: Path, models: float, **kwargs: Any) -> Engine:
    """An engine whose budget holds ``models`` tiny models."""
    estimate = Engine(cache_dir=cache, memory_budget_bytes=1).estimate_memory(ModelSpec(TINY_A))
    return Engine(cache_dir=cache, memory_budget_bytes=int(estimate * models), **kwargs)


class HeldReply:
    """A reply on ``repo_id`` held mid-way at its second decoding step."""

    def __init__(self, engine: Engine, repo_id: str) -> None:
        model = engine.model_and_tokenizer(repo_id)[0]
        self.gate = StepGate(hold_at=2)
        self.handle = self.gate.attach(model)
        del model
        self.result: list[GenerationResult] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(engine.generate(repo_id, USER_TURN, LONG)),
            daemon=True,
        )
        self.thread.start()
        assert self.gate.reached.wait(DEADLINE_S)

    def finish(self) -> GenerationResult:
        self.gate.release.set()
        self.thread.join(DEADLINE_S)
        self.handle.remove()
        del self.handle
        return self.result[0]


def _refs(engine: Engine, repo_id: str) -> list[weakref.ref[object]]:
    model, tok = engine.model_and_tokenizer(repo_id)
    return [weakref.ref(model), weakref.ref(tok), *(weakref.ref(p) for p in model.parameters())]


def _alive(refs: list[weakref.ref[object]]) -> int:
    gc.collect()
    return sum(1 for r in refs if r() is not None)


def test_a_cold_swap_under_a_reply_waits_instead_of_holding_two_models(
    engine_cache: Path,
) -> None:
    engine = _engine_for(engine_cache, 1.6)
    evicted: list[str] = []
    engine.on_evict(evicted.append)
    engine.load(ModelSpec(TINY_A))
    reply = HeldReply(engine, TINY_A)
    try:
        with pytest.raises(ModelBusyError) as caught:
            engine.load(ModelSpec(TINY_B))
        assert caught.value.waiting_for == (TINY_A,)
        assert str(caught.value) == f"waiting for the reply on {TINY_A} to finish"
        assert engine.loaded_models() == [TINY_A]
        assert evicted == []
        fit = engine.check_fit(ModelSpec(TINY_B))
        assert fit.fits  # it will, once the reply ends
        assert not fit.fits_beside_loaded
    finally:
        result = reply.finish()
    assert result.usage.model == TINY_A
    report = engine.load(ModelSpec(TINY_B))  # now the room is free
    assert report.evicted == (TINY_A,)
    assert engine.used_bytes() <= engine.memory_budget_bytes
    engine.close()


def test_unloading_a_model_mid_reply_keeps_its_memory_counted_until_the_reply_ends(
    engine_cache: Path,
) -> None:
    engine = _engine_for(engine_cache, 1.6)
    engine.load(ModelSpec(TINY_A))
    estimate = engine.used_bytes()
    reply = HeldReply(engine, TINY_A)
    refs = _refs(engine, TINY_A)
    try:
        with pytest.raises(ModelBusyError, match="stop the reply"):
            engine.unload(TINY_A, if_idle=True)
        assert engine.unload(TINY_A) == estimate  # unloaded: nothing new starts on it ...
        assert not engine.is_loaded(TINY_A)
        assert engine.used_bytes() == estimate  # ... but its memory is still in use
        with pytest.raises(ModelBusyError) as caught:
            engine.load(ModelSpec(TINY_B))
        assert caught.value.waiting_for == (TINY_A,)
        assert _alive(refs) == len(refs)
    finally:
        reply.finish()
    assert engine.used_bytes() == 0
    assert _alive(refs) == 0, "freed once the reply ended"
    engine.load(ModelSpec(TINY_B))
    engine.close()


def test_max_loaded_models_unloads_the_least_recently_used(engine_cache: Path) -> None:
    engine = Engine(cache_dir=engine_cache, memory_budget_bytes=1 << 30, max_loaded_models=2)
    evicted: list[str] = []
    engine.on_evict(evicted.append)
    engine.load(ModelSpec(TINY_A))
    engine.load(ModelSpec(TINY_B))
    report = engine.load(ModelSpec(TINY_C))
    assert report.evicted == (TINY_A,)
    assert evicted == [TINY_A]
    assert engine.loaded_models() == [TINY_B, TINY_C]
    engine.close()


def test_lowering_the_limits_unloads_models_at_once_but_never_one_in_use(
    engine_cache: Path,
) -> None:
    engine = Engine(cache_dir=engine_cache, memory_budget_bytes=1 << 30)
    evicted: list[str] = []
    engine.on_evict(evicted.append)
    for repo_id in (TINY_A, TINY_B, TINY_C):
        engine.load(ModelSpec(repo_id))
    reply = HeldReply(engine, TINY_A)  # A is the least recently used, but in use
    try:
        assert engine.set_limits(memory_budget_bytes=1 << 30, max_loaded_models=1) == (
            TINY_B,
            TINY_C,
        )
        assert engine.loaded_models() == [TINY_A]
        assert evicted == [TINY_B, TINY_C]
        with pytest.raises(ValueError, match="max_loaded_models"):
            engine.set_limits(max_loaded_models=0)
    finally:
        reply.finish()
    engine.close()


def test_close_during_a_load_returns_at_once_and_the_loaded_model_is_freed(
    engine_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine_module.load_from_cache
    entered, release = threading.Event(), threading.Event()
    loaded: list[weakref.ref[object]] = []

    def slow_load(cached: Any, **kwargs: Any) -> LoadedModel:
        entered.set()
        assert release.wait(DEADLINE_S)  # a big model still in from_pretrained
        result = real(cached, **kwargs)
        loaded.append(weakref.ref(result.model))
        return result

    monkeypatch.setattr(engine_module, "load_from_cache", slow_load)
    engine = Engine(cache_dir=engine_cache, memory_budget_bytes=1 << 30)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            engine.load(ModelSpec(TINY_A))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    assert entered.wait(DEADLINE_S)
    started = time.monotonic()
    engine.close()
    # The load is held for DEADLINE_S; close() frees memory (gc) but never waits for it.
    assert time.monotonic() - started < 5.0
    release.set()
    worker.join(DEADLINE_S)
    assert [type(e) for e in errors] == [EngineClosedError]
    assert engine.loaded_models() == []
    assert _alive(loaded) == 0, "the discarded model was freed"
    with pytest.raises(EngineClosedError):
        engine.load(ModelSpec(TINY_B))


def test_a_loaded_model_says_where_it_sits(engine: Engine) -> None:
    report = engine.load(ModelSpec(TINY_A))
    assert placement_of(report.device_map) in {("CPU",), ("GPU 0",)}
    assert engine.device_map_of(TINY_A) == report.device_map
    assert engine.device_map_of(TINY_B) is None


@pytest.mark.parametrize(
    ("device_map", "placement"),
    [
        ({"": "cpu"}, ("CPU",)),
        ({"": "cuda:0"}, ("GPU 0",)),
        (
            {"model.embed": "cuda:1", "model.layers.0": "cuda:0", "lm_head": "cpu"},
            ("GPU 0", "GPU 1", "CPU"),
        ),
        ({"model.layers.0": "cuda:0", "model.layers.1": "disk"}, ("GPU 0", "disk offload")),
        ({"": "mps"}, ("MPS",)),
    ],
)
def test_placement_labels(device_map: dict[str, str], placement: tuple[str, ...]) -> None:
    assert placement_of(device_map) == placement
