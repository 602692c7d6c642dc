"""Context fitting: the same prompt as the one-by-one rule, at a cost that does not grow.

The reference is the first implementation's rule (apply the chat template, drop the oldest
message after the system prompt, repeat), run on the real tiny models' tokenizers and chat
templates: one with a 512-token context and one with 256 tokens, where every turn of a long
conversation trims.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.engine.context import TokenCounts, fit_chat
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.streaming import build_chat, encode_chat
from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import InvalidGenerationRequestError
from chatwidget.testing.models import CORPUS, build_model

Chat = list[dict[str, str]]


def _load(folder: Path, repo_id: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    return LoadedModel(ModelSpec(repo_id), model, tok, memory_bytes=0, device_map={})


@pytest.fixture(scope="module", params=[512, 256], ids=["ctx512", "ctx256"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real tiny model (tokenizer, ChatML template) with a 512- or 256-token context."""
    context = int(request.param)
    folder = build_model(tmp_path_factory.mktemp("fit"), f"test-org/tiny-{context}", "tiny")
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = context
    (folder / "config.json").write_text(json.dumps(config))
    return _load(folder, f"test-org/tiny-{context}")


def conversation(n: int, seed: int = 0) -> Chat:
    """``n`` messages, alternating user and assistant, of varied lengths from the corpus."""
    rng = random.Random(seed)
    chat = []
    for i in range(n):
        text = " ".join(rng.choice(CORPUS) for _ in range(rng.randint(1, 4)))
        chat.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: {text}"})
    return chat


def template(loaded: LoadedModel) -> tuple[Callable[[Chat], Any], list[int]]:
    """Apply the chat template as the engine does, counting the calls."""
    calls = [0]

    def apply(chat: Chat) -> Any:
        calls[0] += 1
        return loaded.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    return apply, calls


def reference(
    chat: Sequence[Mapping[str, str]], *, limit: int, reserve: int, apply: Callable[[Chat], Any]
) -> tuple[list[int], int]:
    """The one-by-one rule: (prompt ids, messages dropped)."""
    work = [dict(m) for m in chat]
    first = 1 if work and work[0]["role"] == "system" else 0
    dropped = 0
    while True:
        enc = apply(work)
        if int(enc["input_ids"].shape[-1]) + reserve <= limit or len(work) - first <= 1:
            return enc["input_ids"][0].tolist(), dropped
        del work[first]
        dropped += 1


@pytest.mark.parametrize("n", [1, 2, 41, 200])
@pytest.mark.parametrize("system", ["", "You are a helpful assistant that answers briefly."])
@pytest.mark.parametrize("max_new_tokens", [16, 256])
def test_fitted_prompt_equals_the_one_by_one_reference(
    loaded: LoadedModel, n: int, system: str, max_new_tokens: int
) -> None:
    settings = GenerationSettings(system_prompt=system, max_new_tokens=max_new_tokens)
    messages = conversation(n, seed=n)
    limit = int(loaded.model.config.max_position_embeddings)
    apply, _ = template(loaded)
    expected, _ = reference(
        build_chat(messages, system),
        limit=limit,
        reserve=min(max_new_tokens, limit // 4),
        apply=apply,
    )
    enc = encode_chat(loaded, messages, settings)
    assert enc["input_ids"][0].tolist() == expected


def test_every_turn_of_a_long_conversation_matches_and_templates_at_most_a_few_times(
    loaded: LoadedModel,
) -> None:
    """1,000 messages, growing by one turn at a time: the same prompt as the reference each
    turn, with the template applied at most three times per turn (the reference: hundreds),
    and only each turn's new messages tokenized for the estimate.

    The reference runs one by one from 100 messages before the end (at least 1,000 tokens,
    more than either context holds): from the very first message it would take minutes.
    """
    limit = int(loaded.model.config.max_position_embeddings)
    reserve = min(64, limit // 4)
    apply, calls = template(loaded)
    counts = TokenCounts(loaded.tokenizer, apply)
    messages = conversation(1000, seed=7)
    first_turn = build_chat(messages[:960], "")
    fit_chat(first_turn, limit=limit, reserve=reserve, apply=apply, counts=counts)
    for end in range(962, 1001, 2):
        chat = build_chat(messages[:end], "")
        skip = end - 100
        expected, dropped = reference(chat[skip:], limit=limit, reserve=reserve, apply=apply)
        dropped += skip
        before_calls, before_tokenized = calls[0], counts.tokenized
        fitted = fit_chat(chat, limit=limit, reserve=reserve, apply=apply, counts=counts)
        assert fitted.encoding["input_ids"][0].tolist() == expected
        assert fitted.dropped == dropped > 0  # every turn trims
        assert fitted.template_calls == calls[0] - before_calls <= 3
        assert counts.tokenized - before_tokenized <= 2  # the turn's two new messages


def test_a_conversation_that_fits_is_templated_once(loaded: LoadedModel) -> None:
    apply, calls = template(loaded)
    counts = TokenCounts(loaded.tokenizer, apply)
    calls[0] = 0
    chat = conversation(3)
    fitted = fit_chat(chat, limit=100_000, reserve=64, apply=apply, counts=counts)
    assert (fitted.dropped, fitted.template_calls, calls[0]) == (0, 1, 1)


def test_wrong_estimates_still_give_the_reference_prompt(loaded: LoadedModel) -> None:
    """A template whose overhead the probe misjudges costs a few more calls, never a
    different prompt."""
    limit = int(loaded.model.config.max_position_embeddings)
    apply, _ = template(loaded)
    for overhead in (0, 40):  # far too low, far too high
        counts = TokenCounts(loaded.tokenizer, apply)
        counts._overhead = overhead
        chat = build_chat(conversation(120, seed=3), "Be brief.")
        expected, _ = reference(chat, limit=limit, reserve=64, apply=apply)
        fitted = fit_chat(chat, limit=limit, reserve=64, apply=apply, counts=counts)
        assert fitted.encoding["input_ids"][0].tolist() == expected
        assert fitted.template_calls <= 20


def test_a_last_message_longer_than_the_context_is_refused(loaded: LoadedModel) -> None:
    limit = int(loaded.model.config.max_position_embeddings)
    huge = [{"role": "user", "content": "The quick brown fox. " * limit}]
    with pytest.raises(InvalidGenerationRequestError, match="shorten it"):
        encode_chat(loaded, huge, GenerationSettings(max_new_tokens=8))
