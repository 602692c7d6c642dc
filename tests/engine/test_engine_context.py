"""Conversations longer than the model's context: oldest turns go, the reply fits."""

from __future__ import annotations

import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine
from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import InvalidGenerationRequestError
from tests.engine.helpers import TINY_A

SENTENCE = "The quick brown fox jumps over the lazy dog. "


def _context(engine: Engine) -> int:
    model, _ = engine.model_and_tokenizer(TINY_A)
    return int(model.config.max_position_embeddings)


def test_long_history_drops_oldest_turns_and_keeps_system_and_last(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    limit = _context(engine)
    history = []
    for i in range(40):
        history.append({"role": "user", "content": f"question {i}: {SENTENCE * 3}"})
        history.append({"role": "assistant", "content": f"answer {i}: {SENTENCE * 3}"})
    history.append({"role": "user", "content": "last question"})
    settings = GenerationSettings(max_new_tokens=64, system_prompt="Be brief.")
    result = engine.generate(TINY_A, history, settings)
    assert result.usage.new_tokens == 64
    assert result.usage.prompt_tokens + result.usage.new_tokens <= limit
    # The prompt kept the newest turns: it is near the limit, not a tiny remainder.
    assert result.usage.prompt_tokens > limit // 2


def test_reply_is_capped_to_the_room_left_in_the_context(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    limit = _context(engine)
    settings = GenerationSettings(max_new_tokens=limit * 4)
    result = engine.generate(TINY_A, [{"role": "user", "content": "hi"}], settings)
    assert result.usage.prompt_tokens + result.usage.new_tokens == limit


def test_a_single_message_longer_than_the_context_gets_a_clear_error(engine: Engine) -> None:
    engine.load(ModelSpec(TINY_A))
    limit = _context(engine)
    huge = [{"role": "user", "content": SENTENCE * limit}]
    with pytest.raises(InvalidGenerationRequestError, match="context"):
        engine.generate(TINY_A, huge, GenerationSettings(max_new_tokens=8))
