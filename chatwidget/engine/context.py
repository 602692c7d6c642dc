"""Fit a conversation into a model's context: drop the oldest turns, template once or twice.

The rule (unchanged from the first version, which re-applied the chat template once per
dropped turn): keep the system prompt and the last message; drop the oldest other messages,
one at a time, until the templated prompt plus a reserve for the reply fits the context, or
only the last message is left. The fitted prompt is exactly what the template gives for the
messages kept.

What changed is the cost. Each message's token count is estimated from a cache (its text is
tokenized once per tokenizer, and the template's per-message overhead is measured once), so
the number of messages to drop is *guessed* from the newest message backwards, in
O(messages kept). The guess is then checked against the real template: when it is right,
the template is applied twice (the guess fits; one message more does not), or once when
nothing is dropped. A wrong guess costs a galloping and then binary search, O(log turns)
template applications, never one per dropped turn.

This relies on one property of chat templates: dropping a message never makes the prompt
longer. Templates that render each message on its own (ChatML, Llama, Qwen, SmolLM, ...)
have it; ``tests/engine/test_context_fit.py`` checks the result against the one-by-one
reference on real tiny models.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatwidget.errors import InvalidGenerationRequestError

logger = logging.getLogger("chatwidget.engine.context")

Chat = list[dict[str, str]]
#: Messages tokenized at once when counts are missing (one batched tokenizer call).
_BLOCK = 32
#: Token counts kept per tokenizer (oldest forgotten first).
_CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class FittedPrompt:
    """The encoded prompt and what fitting did."""

    encoding: Any  # the BatchEncoding ``apply_chat_template`` returned for the kept messages
    prompt_tokens: int
    dropped: int  # messages dropped from the start (after the system prompt)
    template_calls: int  # how often the chat template was applied (for tests and benches)


class TokenCounts:
    """Estimated token counts of messages for one tokenizer, cached by (role, text)."""

    def __init__(self, tokenizer: Any, apply: Callable[[Chat], Any]) -> None:
        # A weak reference: the cache lives as long as the tokenizer and must not keep it
        # (and its model) alive after an unload.
        self._tokenizer = weakref.ref(tokenizer)
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._overhead = self._measure_overhead(tokenizer, apply)
        self.tokenized = 0  # texts tokenized so far (each once, while it stays cached)

    def estimates(self, chat: Chat, start: int, stop: int) -> list[int]:
        """Estimated tokens of ``chat[start:stop]`` (template overhead included)."""
        keys = [(m["role"], m["content"]) for m in chat[start:stop]]
        with self._lock:
            missing = [k for k in dict.fromkeys(keys) if k not in self._counts]
        tokenizer = self._tokenizer()
        if missing and tokenizer is not None:
            ids = tokenizer([text for _, text in missing], add_special_tokens=False)
            counted = {k: len(i) for k, i in zip(missing, ids["input_ids"], strict=True)}
            with self._lock:
                self.tokenized += len(counted)
                if len(self._counts) + len(counted) > _CACHE_LIMIT:
                    for old in list(self._counts)[: len(counted) + _CACHE_LIMIT // 10]:
                        del self._counts[old]
                self._counts.update(counted)
        with self._lock:
            return [self._counts.get(k, 0) + self._overhead for k in keys]

    @staticmethod
    def _measure_overhead(tokenizer: Any, apply: Callable[[Chat], Any]) -> int:
        """Tokens the template adds around each message, from two probe conversations."""
        probe = {"role": "user", "content": "a"}
        try:
            one = _length(apply([probe]))
            three = _length(apply([probe, {"role": "assistant", "content": "a"}, probe]))
            text = len(tokenizer(["a"], add_special_tokens=False)["input_ids"][0])
        except Exception:  # a template that refuses the probe: estimates from text alone
            logger.debug("could not measure the chat template's overhead", exc_info=True)
            return 0
        return max(0, (three - one) // 2 - text)


_COUNTS: weakref.WeakKeyDictionary[Any, TokenCounts] = weakref.WeakKeyDictionary()
_COUNTS_LOCK = threading.Lock()


def token_counts(tokenizer: Any, apply: Callable[[Chat], Any]) -> TokenCounts:
    """The shared :class:`TokenCounts` of ``tokenizer`` (made on first use)."""
    with _COUNTS_LOCK:
        counts = _COUNTS.get(tokenizer)
        if counts is None:
            counts = TokenCounts(tokenizer, apply)
            _COUNTS[tokenizer] = counts
        return counts


def fit_chat(
    chat: Chat,
    *,
    limit: int,
    reserve: int,
    apply: Callable[[Chat], Any],
    counts: TokenCounts,
    name: str = "this model",
) -> FittedPrompt:
    """Encode ``chat`` with the oldest messages dropped so that it fits ``limit - reserve``.

    ``apply`` applies the chat template to a list of messages and returns the encoding.
    Raises :class:`InvalidGenerationRequestError` when even the last message alone (with the
    system prompt) does not fit the context.
    """
    first = 1 if chat and chat[0]["role"] == "system" else 0
    most = max(0, len(chat) - first - 1)  # never drop the last message
    encodings: dict[int, Any] = {}

    def kept(drop: int) -> Chat:
        return chat[:first] + chat[first + drop :]

    def fits(drop: int) -> bool:
        if drop not in encodings:
            encodings[drop] = apply(kept(drop))
        return drop == most or _length(encodings[drop]) + reserve <= limit

    dropped = _smallest(fits, _guess(chat, first, most, limit - reserve, counts), most)
    encoding = encodings[dropped]
    prompt_tokens = _length(encoding)
    if prompt_tokens >= limit:
        raise InvalidGenerationRequestError(
            f"the last message is {prompt_tokens} tokens long, more than the {limit}-token "
            f"context of {name}: shorten it, or pick a model with a longer context."
        )
    return FittedPrompt(encoding, prompt_tokens, dropped, len(encodings))


def _guess(chat: Chat, first: int, most: int, budget: int, counts: TokenCounts) -> int:
    """How many messages to drop, from cached estimates, newest message backwards."""
    total = sum(counts.estimates(chat, 0, first)) + counts.estimates([_GEN_PROMPT], 0, 1)[0]
    stop = len(chat)
    while stop > first:
        start = max(first, stop - _BLOCK)
        estimates = counts.estimates(chat, start, stop)
        for offset in range(len(estimates) - 1, -1, -1):
            total += estimates[offset]
            if total > budget:
                return min(most, start + offset - first + 1)
        stop = start
    return 0


#: Stands for the generation prompt in the estimate: one message's overhead, no text.
_GEN_PROMPT = {"role": "assistant", "content": ""}


def _smallest(ok: Callable[[int], bool], guess: int, top: int) -> int:
    """The smallest ``k`` in ``[0, top]`` with ``ok(k)``, for a monotone ``ok`` (``ok(top)``
    holds). Starts at ``guess``: two calls when it is right, O(log top) when it is not."""
    guess = min(max(guess, 0), top)
    if ok(guess):
        good, bad, step = guess, -1, 1
        while good > 0:
            probe = max(good - step, 0)
            if not ok(probe):
                bad = probe
                break
            good, step = probe, step * 2
    else:
        bad, step = guess, 1
        while True:
            probe = min(bad + step, top)
            if ok(probe):
                good = probe
                break
            bad, step = probe, step * 2
    while good - bad > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def _length(encoding: Any) -> int:
    ids = encoding["input_ids"]
    shape = getattr(ids, "shape", None)
    return int(shape[-1]) if shape is not None else len(ids)
