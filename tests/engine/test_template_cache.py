"""The chat-template cache: the same messages cost one build, and nothing stale comes back."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import torch

from chatwidget.engine import template_cache
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.streaming import encode_chat
from chatwidget.engine.types import GenerationSettings


class Tokenizer:
    """Something weakly referable, as a real tokenizer is."""


def test_the_same_messages_build_once_and_others_build_again() -> None:
    tok = Tokenizer()
    builds: list[str] = []

    def build(text: str) -> Any:
        builds.append(text)
        return {"input_ids": [len(text)]}

    chat = [{"role": "user", "content": "hi"}]
    first = template_cache.cached_template(tok, chat, lambda: build("hi"))
    again = template_cache.cached_template(tok, [dict(chat[0])], lambda: build("hi"))
    assert again is first
    assert builds == ["hi"]
    other = [{"role": "user", "content": "hi!"}]
    assert template_cache.cached_template(tok, other, lambda: build("hi!")) is not first
    as_system = [{"role": "system", "content": "hi"}]  # same text, another role
    template_cache.cached_template(tok, as_system, lambda: build("system hi"))
    assert builds == ["hi", "hi!", "system hi"]


def test_only_the_last_few_are_kept_and_they_go_with_their_tokenizer() -> None:
    tok = Tokenizer()
    builds: list[int] = []
    for n in range(template_cache.ENTRIES + 1):
        template_cache.cached_template(
            tok, [{"role": "user", "content": str(n)}], lambda n=n: builds.append(n)
        )
    template_cache.cached_template(
        tok, [{"role": "user", "content": "0"}], lambda: builds.append(0)
    )
    assert builds == [*range(template_cache.ENTRIES + 1), 0]  # the oldest was dropped
    alive = weakref.ref(tok)
    del tok
    gc.collect()
    assert alive() is None  # the cache does not keep a tokenizer (or its model) alive


def test_encoding_the_same_conversation_again_applies_no_template(
    loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = loaded.tokenizer
    real = tok.apply_chat_template
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tok, "apply_chat_template", counted)
    settings = GenerationSettings(max_new_tokens=8)
    chat = [
        {"role": "user", "content": "a question about the sea"},
        {"role": "assistant", "content": "an answer about waves"},
        {"role": "user", "content": "and the tides?"},
    ]
    first = encode_chat(loaded, chat, settings)
    built = len(calls)
    assert built >= 1
    second = encode_chat(loaded, [dict(m) for m in chat], settings)  # Regenerate
    assert len(calls) == built
    assert torch.equal(first["input_ids"], second["input_ids"])
    edited = [*chat[:2], {"role": "user", "content": "and the moon?"}]
    third = encode_chat(loaded, edited, settings)
    assert len(calls) > built
    expected = real(edited, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert torch.equal(third["input_ids"], expected["input_ids"])
