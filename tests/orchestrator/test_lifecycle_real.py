"""Issue 11 on the real stack: the real Downloader and Engine against the local hub, tiny models.

A cold swap under a budget while a reply streams; a failed load loads the old model back;
keep_alive and an explicit unload free the memory and the next reply loads the model again;
close() returns within 2 s during a load; a subscriber may close on an eviction.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from orch_fakes import Recorder

from chatwidget import runtime
from chatwidget.catalog import ModelSpec
from chatwidget.downloads import Downloader
from chatwidget.engine import Engine
from chatwidget.engine import engine as engine_module
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.types import GenerationResult, GenerationSettings
from chatwidget.orchestrator import (
    PHASE_GENERATING,
    PHASE_LOADING,
    Event,
    Evicted,
    ModelState,
    NoteChanged,
    Orchestrator,
    StateChanged,
    Switched,
)
from chatwidget.testing.hub import LocalHub
from tests.engine.helpers import StepGate

S = ModelState
TINY, TINY_B = "demo/tiny-chat", "demo/tiny-chat-b"
HELLO = [{"role": "user", "content": "hello"}]
SETTINGS = GenerationSettings(max_new_tokens=48)
WAIT_S = 60.0


def is_state(repo_id: str, state: ModelState) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        isinstance(e, StateChanged) and e.repo_id == repo_id and e.new is state for e in events
    )


class Stack:
    """A real orchestrator over a cache holding both tiny models; c1 chats on TINY."""

    def __init__(self, hub: LocalHub, cache: Path, models: float) -> None:
        self.downloader = Downloader(endpoint=hub.url, cache_dir=cache, token=False)
        for repo_id in (TINY, TINY_B):
            self.downloader.download(repo_id, on_progress=lambda _p: None, cancel=threading.Event())
        probe = Engine(cache_dir=cache, memory_budget_bytes=1)
        self.one_model = probe.estimate_memory(ModelSpec(TINY))
        self.engine = Engine(cache_dir=cache, memory_budget_bytes=int(self.one_model * models))
        self.orch = Orchestrator(self.downloader, self.engine)
        self.recorder = Recorder()
        self.orch.subscribe(self.recorder)
        self.orch.open_conversation("c1", model=TINY)
        self.recorder.wait_for(is_state(TINY, S.READY), WAIT_S)

    def close(self) -> None:
        self.orch.close()
        self.downloader.close()
        self.engine.close()


@pytest.fixture
def stack(local_hub: LocalHub, hf_cache: Path) -> Iterator[Stack]:
    made = Stack(local_hub, hf_cache, 1.6)  # room for one model and its overhead, not two
    yield made
    made.close()


def held_reply(stack: Stack, repo_id: str) -> tuple[StepGate, Any, list[GenerationResult]]:
    model = stack.engine.model_and_tokenizer(repo_id)[0]
    gate = StepGate(hold_at=3)
    handle = gate.attach(model)
    del model
    results: list[GenerationResult] = []
    thread = threading.Thread(
        target=lambda: results.append(stack.orch.generate("c1", HELLO, SETTINGS)), daemon=True
    )
    thread.start()
    assert gate.reached.wait(WAIT_S)
    return gate, (handle, thread), results


def refs_of(engine: Engine, repo_id: str) -> list[weakref.ref[object]]:
    model, tok = engine.model_and_tokenizer(repo_id)
    return [weakref.ref(model), weakref.ref(tok), *(weakref.ref(p) for p in model.parameters())]


def alive(refs: list[weakref.ref[object]]) -> int:
    gc.collect()
    return sum(1 for r in refs if r() is not None)


def test_cold_swap_under_a_budget_with_a_reply_streaming(stack: Stack) -> None:
    orch, engine, recorder = stack.orch, stack.engine, stack.recorder
    gate, (handle, thread), results = held_reply(stack, TINY)
    refs_a = refs_of(engine, TINY)
    orch.request_model("c1", TINY_B)
    recorder.wait_for(
        lambda events: any(isinstance(e, NoteChanged) and e.note for e in events), WAIT_S
    )
    status = orch.snapshot().models[TINY_B]
    assert status.state is S.COMPILING
    assert status.note == f"waiting for the reply on {TINY} to finish"
    assert engine.loaded_models() == [TINY]
    assert engine.used_bytes() <= engine.memory_budget_bytes
    assert alive(refs_a) == len(refs_a)
    gate.release.set()
    thread.join(WAIT_S)
    handle.remove()
    del handle
    recorder.wait_for(
        lambda events: any(isinstance(e, Switched) and e.repo_id == TINY_B for e in events),
        WAIT_S,
    )
    assert [r.usage.model for r in results] == [TINY]
    assert results[0].usage.new_tokens == SETTINGS.max_new_tokens  # it ran to the end
    assert engine.loaded_models() == [TINY_B]
    assert alive(refs_a) == 0, "A's memory was freed before B loaded"
    order = [
        (type(e).__name__, getattr(e, "repo_id", None))
        for e in recorder.events
        if isinstance(e, Evicted) or (isinstance(e, StateChanged) and e.new is S.READY)
    ]
    assert order[-2:] == [("Evicted", TINY), ("StateChanged", TINY_B)]
    assert orch.generate("c1", HELLO, SETTINGS).usage.model == TINY_B


def test_a_failed_load_loads_the_evicted_model_back(stack: Stack, hf_cache: Path) -> None:
    orch, engine, recorder = stack.orch, stack.engine, stack.recorder
    snapshot = stack.downloader.snapshot_path(TINY_B)
    assert snapshot is not None
    config = snapshot / "config.json"
    size = config.stat().st_size
    config.unlink()  # the symlink into the blob store
    # same size (the cache still counts it as complete), but the model cannot load now
    config.write_text("{ this is not JSON".ljust(size))
    orch.request_model("c1", TINY_B)
    recorder.wait_for(is_state(TINY_B, S.FAILED), WAIT_S)
    recorder.wait_for(
        lambda events: sum(1 for e in events if is_state(TINY, S.READY)([e])) >= 2, WAIT_S
    )
    assert orch.wait_until_idle(WAIT_S)
    assert orch.state(TINY) is S.READY
    assert orch.active_model("c1") == TINY
    assert engine.loaded_models() == [TINY]
    assert orch.generate("c1", HELLO, SETTINGS).usage.model == TINY
    failure = orch.snapshot().models[TINY_B].failure
    assert failure is not None
    assert failure.kind == "load"
    assert [e.repo_id for e in recorder.of(Evicted)] == [TINY]


def test_unload_frees_the_memory_and_the_next_reply_loads_the_model_again(
    stack: Stack,
) -> None:
    orch, engine = stack.orch, stack.engine
    refs = refs_of(engine, TINY)
    result = orch.unload(TINY)
    assert result.unloaded
    assert result.freed_bytes == stack.one_model
    assert orch.state(TINY) is S.DOWNLOADED
    assert alive(refs) == 0
    phases: list[str] = []
    reply = orch.generate("c1", HELLO, SETTINGS, on_phase=phases.append)
    assert reply.usage.model == TINY
    assert phases == [PHASE_LOADING, PHASE_GENERATING]
    status = orch.snapshot().models[TINY]
    assert status.state is S.READY
    assert status.placement in (("CPU",), ("GPU 0",))


def test_keep_alive_unloads_an_idle_model_on_the_worker_thread(
    local_hub: LocalHub, hf_cache: Path
) -> None:
    made = Stack(local_hub, hf_cache, 4)
    try:
        made.orch.set_keep_alive(0.3)
        made.orch.generate("c1", HELLO, SETTINGS)  # used: the timer counts from here
        made.recorder.wait_for(
            lambda events: any(isinstance(e, Evicted) and e.reason == "idle" for e in events),
            WAIT_S,
        )
        assert made.engine.loaded_models() == []
        assert made.orch.active_model("c1") == TINY
    finally:
        made.close()


def test_close_returns_within_two_seconds_during_a_load(
    local_hub: LocalHub, hf_endpoint: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine_module.load_from_cache
    entered, release = threading.Event(), threading.Event()
    loaded: list[weakref.ref[object]] = []

    def slow_load(cached: Any, **kwargs: Any) -> LoadedModel:
        entered.set()
        assert release.wait(WAIT_S)  # a model that takes a long time to load
        result = real(cached, **kwargs)
        loaded.append(weakref.ref(result.model))
        return result

    monkeypatch.setattr(engine_module, "load_from_cache", slow_load)
    rt = runtime.acquire(endpoint=hf_endpoint, cache_dir=hf_cache)
    rt.orchestrator.open_conversation("c1", model=TINY)
    assert entered.wait(WAIT_S)
    started = time.monotonic()
    runtime.release(rt)  # the last user: the runtime closes
    took = time.monotonic() - started
    assert took < 2.0, f"close took {took:.2f} s during a load"
    release.set()
    worker = rt.orchestrator._worker
    assert worker is not None
    worker.thread.join(WAIT_S)
    assert not worker.thread.is_alive()
    assert rt.engine.loaded_models() == []
    assert alive(loaded) == 0, "the load's result was discarded and freed"


def test_a_subscriber_may_close_the_runtime_on_an_eviction(
    local_hub: LocalHub, hf_endpoint: str, hf_cache: Path
) -> None:
    probe = Engine(cache_dir=hf_cache, memory_budget_bytes=1)
    stack = Stack(local_hub, hf_cache, 1.6)  # fills the cache for the runtime below
    one_model = stack.one_model
    stack.close()
    del probe
    rt = runtime.acquire(
        endpoint=hf_endpoint, cache_dir=hf_cache, memory_budget=int(one_model * 1.6)
    )
    closed = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, Evicted):
            runtime.release(rt)  # from inside the load's eviction: must not deadlock
            closed.set()

    rt.orchestrator.subscribe(on_event)
    rt.orchestrator.open_conversation("c1", model=TINY)
    assert rt.orchestrator.wait_until_idle(WAIT_S)
    rt.orchestrator.request_model("c1", TINY_B)  # a cold swap evicts TINY
    assert closed.wait(WAIT_S), "the subscriber deadlocked"
    assert rt.closed
