"""Streaming replies: exact greedy output, stop, errors, serialization, chat templates."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine
from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import (
    GenerationError,
    InvalidGenerationRequestError,
    ModelNotLoadedError,
    NoChatTemplateError,
)
from tests.engine.helpers import (
    DEADLINE_S,
    NO_TEMPLATE,
    TINY_A,
    USER_TURN,
    StepGate,
    plain_greedy_ids,
)

GREEDY = GenerationSettings(max_new_tokens=24, do_sample=False)


def test_streamed_text_equals_plain_greedy_generate_token_for_token(
    engine: Engine, engine_cache: Path
) -> None:
    engine.load(ModelSpec(TINY_A))
    pieces: list[str] = []
    result = engine.generate(TINY_A, USER_TURN, GREEDY, on_text=pieces.append)

    expected_ids = plain_greedy_ids(engine_cache, TINY_A, USER_TURN, GREEDY.max_new_tokens)
    _, tok = engine.model_and_tokenizer(TINY_A)
    assert list(result.token_ids) == expected_ids
    assert result.text == tok.decode(expected_ids, skip_special_tokens=True)
    assert "".join(pieces) == result.text
    assert len(pieces) > 1, "text must arrive in several pieces, not at the end"
    assert not result.stopped


def test_usage_reports_prompt_and_new_tokens_ttft_and_rate(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    result = engine.generate(TINY_A, USER_TURN, GREEDY)
    _, tok = engine.model_and_tokenizer(TINY_A)
    prompt = tok.apply_chat_template(USER_TURN, add_generation_prompt=True, return_dict=True)

    usage = result.usage
    assert usage.model == TINY_A
    assert usage.prompt_tokens == len(prompt["input_ids"])
    assert usage.new_tokens == GREEDY.max_new_tokens  # tiny models never pick EOS
    assert usage.time_to_first_token_s is not None
    assert 0 < usage.time_to_first_token_s <= usage.duration_s
    assert usage.tokens_per_s == pytest.approx(usage.new_tokens / usage.duration_s)


def test_system_prompt_is_prepended_through_the_chat_template(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    settings = GenerationSettings(max_new_tokens=4, system_prompt="You are a helpful assistant.")
    result = engine.generate(TINY_A, USER_TURN, settings)
    _, tok = engine.model_and_tokenizer(TINY_A)
    with_system = [{"role": "system", "content": settings.system_prompt}, *USER_TURN]
    prompt = tok.apply_chat_template(with_system, add_generation_prompt=True, return_dict=True)
    assert result.usage.prompt_tokens == len(prompt["input_ids"])


def test_sampling_settings_produce_the_requested_number_of_tokens(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.8, top_p=0.9)
    result = engine.generate(TINY_A, USER_TURN, settings)
    assert result.usage.new_tokens == 8
    assert result.text


def test_stop_from_another_thread_ends_within_one_step(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    model, tok = engine.model_and_tokenizer(TINY_A)
    gate = StepGate(hold_at=5)
    handle = gate.attach(model)
    stop = threading.Event()

    def stopper() -> None:
        assert gate.reached.wait(DEADLINE_S)
        stop.set()
        gate.release.set()

    other = threading.Thread(target=stopper)
    other.start()
    pieces: list[str] = []
    try:
        result = engine.generate(
            TINY_A,
            USER_TURN,
            GenerationSettings(max_new_tokens=200),
            on_text=pieces.append,
            stop=stop,
        )
    finally:
        other.join(DEADLINE_S)
        handle.remove()

    assert result.stopped
    # stop was set during step 5: that step's token is kept, and no further step runs
    assert gate.steps == 5
    assert result.usage.new_tokens == 5
    assert result.text == tok.decode(list(result.token_ids), skip_special_tokens=True)
    assert "".join(pieces) == result.text


def test_stop_set_before_the_call_returns_an_empty_stopped_reply(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    stop = threading.Event()
    stop.set()
    result = engine.generate(TINY_A, USER_TURN, GREEDY, stop=stop)
    assert result.stopped
    assert result.text == ""
    assert result.usage.new_tokens == 0


def test_failing_generate_surfaces_its_error_with_the_partial_reply(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    model, _ = engine.model_and_tokenizer(TINY_A)

    def explode(step: int) -> None:
        if step == 12:
            raise RuntimeError("simulated device failure")

    handle = StepGate(on_step=explode).attach(model)
    pieces: list[str] = []
    try:
        with pytest.raises(GenerationError, match="simulated device failure") as caught:
            engine.generate(
                TINY_A, USER_TURN, GenerationSettings(max_new_tokens=50), on_text=pieces.append
            )
    finally:
        handle.remove()
    assert isinstance(caught.value, RuntimeError)
    assert caught.value.partial_text == "".join(pieces)
    assert caught.value.partial_text, "the 11 tokens before the failure are kept"
    # the model's lock was released: the next turn works
    again = engine.generate(TINY_A, USER_TURN, GenerationSettings(max_new_tokens=3))
    assert again.usage.new_tokens == 3


def test_error_in_on_text_stops_generation_and_reaches_the_caller(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    model, _ = engine.model_and_tokenizer(TINY_A)
    gate = StepGate()
    handle = gate.attach(model)

    def broken_callback(piece: str) -> None:
        raise KeyError("widget went away")

    try:
        with pytest.raises(KeyError, match="widget went away"):
            engine.generate(
                TINY_A, USER_TURN, GenerationSettings(max_new_tokens=200), on_text=broken_callback
            )
    finally:
        handle.remove()
    assert gate.steps < 200, "generation must stop once the callback failed"


def test_two_chats_on_one_model_are_serialized_not_interleaved(
    engine: Engine, engine_cache: Path
) -> None:
    engine.load(ModelSpec(TINY_A))
    model, _ = engine.model_and_tokenizer(TINY_A)
    gate = StepGate(hold_at=2)
    handle = gate.attach(model)
    other_turn = [{"role": "user", "content": "Write a poem about the sea."}]
    results: dict[str, object] = {}

    def chat(name: str, messages: list[dict[str, str]]) -> None:
        results[name] = engine.generate(TINY_A, messages, GREEDY)

    first = threading.Thread(target=chat, args=("first", USER_TURN))
    first.start()
    assert gate.reached.wait(DEADLINE_S)  # the first chat is mid-reply
    second = threading.Thread(target=chat, args=("second", other_turn))
    second.start()
    gate.release.set()
    first.join(DEADLINE_S)
    second.join(DEADLINE_S)
    handle.remove()

    # each chat's forward passes ran as one block: never interleaved
    switches = sum(1 for a, b in zip(gate.threads, gate.threads[1:], strict=False) if a is not b)
    assert switches == 1
    assert len(gate.threads) == 2 * GREEDY.max_new_tokens
    first_result, second_result = results["first"], results["second"]
    assert list(first_result.token_ids) == plain_greedy_ids(  # type: ignore[attr-defined]
        engine_cache, TINY_A, USER_TURN, GREEDY.max_new_tokens
    )
    assert list(second_result.token_ids) == plain_greedy_ids(  # type: ignore[attr-defined]
        engine_cache, TINY_A, other_turn, GREEDY.max_new_tokens
    )


def test_model_without_chat_template_gets_a_clear_error(engine: Engine) -> None:
    engine.load(ModelSpec(NO_TEMPLATE))
    with pytest.raises(NoChatTemplateError, match="no chat template") as caught:
        engine.generate(NO_TEMPLATE, USER_TURN, GREEDY)
    assert isinstance(caught.value, ValueError)


def test_unknown_role_is_rejected_before_generating(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    with pytest.raises(InvalidGenerationRequestError, match="role"):
        engine.generate(TINY_A, [{"role": "robot", "content": "beep"}], GREEDY)
    with pytest.raises(InvalidGenerationRequestError, match="empty"):
        engine.generate(TINY_A, [], GREEDY)
    with pytest.raises(InvalidGenerationRequestError, match="max_new_tokens"):
        engine.generate(TINY_A, USER_TURN, GenerationSettings(max_new_tokens=0))


def test_generate_on_a_model_that_is_not_loaded_says_to_load_it(engine: Engine) -> None:
    with pytest.raises(ModelNotLoadedError, match="load it"):
        engine.generate(TINY_A, USER_TURN, GREEDY)
