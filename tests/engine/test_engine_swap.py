"""Swapping models: a reply in flight finishes on its model, and unloading frees memory."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine
from chatwidget.engine.types import GenerationResult, GenerationSettings
from chatwidget.errors import GenerationError
from tests.engine.helpers import (
    DEADLINE_S,
    TINY_A,
    TINY_B,
    USER_TURN,
    StepGate,
    plain_greedy_ids,
)

GREEDY = GenerationSettings(max_new_tokens=16)


def _weakrefs_of_loaded(engine: Engine, repo_id: str) -> list[weakref.ref[object]]:
    """Weak references to the model, its tokenizer and every parameter tensor."""
    model, tok = engine.model_and_tokenizer(repo_id)
    refs: list[weakref.ref[object]] = [weakref.ref(model), weakref.ref(tok)]
    refs += [weakref.ref(p) for p in model.parameters()]
    return refs


def _alive(refs: list[weakref.ref[object]]) -> int:
    gc.collect()
    return sum(1 for r in refs if r() is not None)


def test_unload_makes_the_model_tensors_unreachable(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    refs = _weakrefs_of_loaded(engine, TINY_A)
    assert _alive(refs) == len(refs)

    engine.unload(TINY_A)

    assert not engine.is_loaded(TINY_A)
    assert _alive(refs) == 0


def test_unload_after_replies_and_a_failed_reply_leaves_nothing_reachable(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    engine.generate(TINY_A, USER_TURN, GREEDY, on_text=lambda _: None)
    model = engine.model_and_tokenizer(TINY_A)[0]

    def explode(step: int) -> None:
        raise RuntimeError("boom")

    handle = StepGate(on_step=explode).attach(model)
    with pytest.raises(GenerationError) as caught:
        engine.generate(TINY_A, USER_TURN, GREEDY)
    handle.remove()
    del model
    refs = _weakrefs_of_loaded(engine, TINY_A)

    engine.unload(TINY_A)

    assert _alive(refs) == 0, "the streamer, generate thread or the error's frames kept it alive"
    assert "boom" in str(caught.value)


def test_unknown_model_unload_is_ignored(engine: Engine) -> None:
    engine.unload("test-org/never-loaded")
    assert engine.loaded_models() == []


def test_reply_in_flight_finishes_on_its_model_while_the_next_model_loads(
    engine: Engine, engine_cache: Path
) -> None:
    engine.load(ModelSpec(TINY_A))
    model_a = engine.model_and_tokenizer(TINY_A)[0]
    gate = StepGate(hold_at=3)
    handle = gate.attach(model_a)
    del model_a
    refs_a = _weakrefs_of_loaded(engine, TINY_A)
    outcome: list[GenerationResult] = []
    chat = threading.Thread(
        target=lambda: outcome.append(engine.generate(TINY_A, USER_TURN, GREEDY))
    )
    chat.start()
    try:
        assert gate.reached.wait(DEADLINE_S)  # the reply on A is mid-way
        # the swap: load B and drop A while A is still generating
        report = engine.load(ModelSpec(TINY_B))
        engine.unload(TINY_A)
        assert report.duration_s > 0
        assert engine.loaded_models() == [TINY_B]
        assert _alive(refs_a) == len(refs_a), "the reply in flight keeps its own model alive"
    finally:
        gate.release.set()
        chat.join(DEADLINE_S)
        handle.remove()
    del handle

    (reply_a,) = outcome
    assert reply_a.usage.model == TINY_A
    assert list(reply_a.token_ids) == plain_greedy_ids(engine_cache, TINY_A, USER_TURN, 16)
    assert _alive(refs_a) == 0, "once the reply ended, model A is freed"
    # the next turn is served by B
    reply_b = engine.generate(TINY_B, USER_TURN, GREEDY)
    assert reply_b.usage.model == TINY_B
    assert list(reply_b.token_ids) == plain_greedy_ids(engine_cache, TINY_B, USER_TURN, 16)


def test_close_stops_replies_in_flight_and_unloads_everything(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    engine.load(ModelSpec(TINY_B))
    model_a = engine.model_and_tokenizer(TINY_A)[0]
    gate = StepGate(hold_at=2)
    handle = gate.attach(model_a)
    del model_a
    refs = _weakrefs_of_loaded(engine, TINY_A) + _weakrefs_of_loaded(engine, TINY_B)
    outcome: list[GenerationResult] = []
    chat = threading.Thread(
        target=lambda: outcome.append(
            engine.generate(TINY_A, USER_TURN, GenerationSettings(max_new_tokens=500))
        )
    )
    chat.start()
    assert gate.reached.wait(DEADLINE_S)

    engine.close()
    gate.release.set()
    chat.join(DEADLINE_S)
    handle.remove()
    del handle

    assert not chat.is_alive()
    (reply,) = outcome
    assert reply.stopped
    assert reply.usage.new_tokens == 2
    assert engine.loaded_models() == []
    assert _alive(refs) == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("chatwidget-generate")]
