"""Stream one reply from a loaded model: chat template, streamer thread, stop, usage.

``model.generate`` runs in a helper thread and feeds a :class:`TokenBuffer` (a transformers
streamer whose ``put`` only appends token ids: O(1) per token). The calling thread wakes at
the first token, then every :data:`DECODE_INTERVAL_S`, and turns the ids collected since
into text with transformers' own ``TextStreamer`` rules (text up to the last space, flushed
at each newline and at the end), handing the pieces to ``on_text``. Decoding a few tokens at
a time, instead of the whole line again for every token, keeps the cost per token constant,
and the pieces add up to exactly the same text. A ``StoppingCriteria`` bound to stop events
ends generation at the next decoding step, and also records when the first token came and
how many steps ran.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer
from transformers.generation.streamers import BaseStreamer

from chatwidget.engine.context import fit_chat, token_counts
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.memory import drop_frame_references, format_error
from chatwidget.engine.types import GenerationResult, GenerationSettings, Usage, validate_settings
from chatwidget.errors import GenerationError, InvalidGenerationRequestError, NoChatTemplateError

logger = logging.getLogger("chatwidget.engine.streaming")

_ROLES = frozenset({"system", "user", "assistant"})
#: How often the reading thread decodes the tokens collected since its last visit (and
#: checks that the generate thread is still alive). The first token wakes it at once; after
#: that, text goes to the front end at this pace anyway (the widget's delta interval).
DECODE_INTERVAL_S = 0.05


class TokenBuffer(BaseStreamer):
    """What ``model.generate`` streams into: new token ids, appended under a lock.

    The prompt (the first ``put``) is skipped. ``wake`` is set at the first token and at
    the end, so the reader sleeps between decode rounds instead of waking per token.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._prompt = True
        self._first = True
        self.wake = threading.Event()
        self.ended = threading.Event()

    def put(self, value: Any) -> None:
        if self._prompt:  # generate() puts the prompt first
            self._prompt = False
            return
        ids = value.tolist()
        with self._lock:
            if ids and isinstance(ids[0], list):
                if len(ids) > 1:
                    raise ValueError("streaming supports batch size 1 only")
                ids = ids[0]
            self._ids.extend(ids)
        if self._first:  # only the first token wakes the reader; then it comes on its own
            self._first = False
            self.wake.set()

    def end(self) -> None:
        self.ended.set()
        self.wake.set()

    def take(self) -> list[int]:
        with self._lock:
            ids, self._ids = self._ids, []
            return ids


class _TextPieces(TextStreamer):
    """transformers' ``TextStreamer`` rules, handing each finished piece to ``emit``."""

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self._emit = emit

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._emit(text)


class EventStoppingCriteria(StoppingCriteria):
    """Stops generation at the next step once any of ``events`` is set; counts steps.

    It runs once per decoding step, so it does as little as it can: the answer tensors
    are made once per shape and device and reused.
    """

    def __init__(self, events: Sequence[threading.Event]) -> None:
        self._events = tuple(events)
        self.steps = 0
        self.first_token_at: float | None = None
        self.stopped = False
        self._answers: dict[tuple[int, Any, bool], torch.Tensor] = {}

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.steps += 1
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        for event in self._events:
            if event.is_set():
                self.stopped = True
        key = (input_ids.shape[0], input_ids.device, self.stopped)
        answer = self._answers.get(key)
        if answer is None:
            answer = torch.full(key[:1], self.stopped, dtype=torch.bool, device=key[1])
            self._answers[key] = answer
        return answer


def validate_request(messages: Sequence[Mapping[str, str]], settings: GenerationSettings) -> None:
    """Raise :class:`InvalidGenerationRequestError` for malformed messages or settings."""
    if not messages:
        raise InvalidGenerationRequestError("messages is empty: send at least one user message.")
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES or not isinstance(content, str):
            raise InvalidGenerationRequestError(
                f"message {i} must be {{'role': one of {sorted(_ROLES)}, 'content': str}}, "
                f"got {dict(message)!r}."
            )
    validate_settings(settings)


def build_chat(messages: Sequence[Mapping[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """The history with the settings' system prompt first (replacing a leading system message)."""
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt:
        if chat and chat[0]["role"] == "system":
            chat = chat[1:]
        chat.insert(0, {"role": "system", "content": system_prompt})
    return chat


def encode_chat(
    loaded: LoadedModel, messages: Sequence[Mapping[str, str]], settings: GenerationSettings
) -> Any:
    """Tokenize the history through the chat template, ready for ``model.generate(**enc)``.

    The oldest turns are dropped to fit the model's context (see
    :mod:`chatwidget.engine.context`): never the system prompt or the last message, until
    the prompt and room for a useful reply (at least a quarter of the context) fit.
    """
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplateError(
            f"{loaded.repo_id} has no chat template, so a conversation cannot be formatted "
            "for it. Pick an instruct/chat model (its tokenizer_config.json or "
            "chat_template.jinja defines one)."
        )
    chat = build_chat(messages, settings.system_prompt)
    limit = context_length(loaded)

    def apply(kept: list[dict[str, str]]) -> Any:
        return _apply_template(loaded, kept)

    fitted = fit_chat(
        chat,
        limit=limit,
        reserve=min(settings.max_new_tokens, limit // 4),
        apply=apply,
        counts=token_counts(tokenizer, apply),
        name=loaded.repo_id,
    )
    if fitted.dropped:
        logger.info(
            "%s: dropped the %d oldest messages to fit its context", loaded.repo_id, fitted.dropped
        )
    return fitted.encoding.to(loaded.model.device)


def _apply_template(loaded: LoadedModel, chat: list[dict[str, str]]) -> Any:
    try:
        return loaded.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    except Exception as exc:
        raise InvalidGenerationRequestError(
            f"the chat template of {loaded.repo_id} rejected this conversation: {exc}"
        ) from exc


def context_length(loaded: LoadedModel) -> int:
    """The most tokens (prompt and reply) the model takes, from its config."""
    config = loaded.model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def generate_kwargs(
    loaded: LoadedModel, settings: GenerationSettings, prompt_tokens: int = 0
) -> dict[str, Any]:
    """Generation arguments; sampling flags only when sampling, so greedy runs warn-free.

    ``max_new_tokens`` is capped so prompt and reply stay within the model's context.
    """
    room = max(1, context_length(loaded) - prompt_tokens)
    kwargs: dict[str, Any] = {
        "max_new_tokens": min(settings.max_new_tokens, room),
        "do_sample": settings.do_sample,
    }
    if settings.do_sample:
        kwargs["temperature"] = settings.temperature
        kwargs["top_p"] = settings.top_p
    tokenizer = loaded.tokenizer
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is not None and getattr(loaded.model.generation_config, "pad_token_id", None) is None:
        kwargs["pad_token_id"] = pad
    return kwargs


def stream_reply(
    loaded: LoadedModel,
    messages: Sequence[Mapping[str, str]],
    settings: GenerationSettings,
    *,
    on_text: Callable[[str], None] | None,
    stop_events: Sequence[threading.Event],
) -> GenerationResult:
    """Generate one reply on ``loaded``, streaming text pieces to ``on_text``. Blocks.

    Raises :class:`GenerationError` (with ``partial_text``) when ``generate`` raises,
    and re-raises whatever ``on_text`` raises after stopping generation.
    """
    started = time.perf_counter()
    enc = encode_chat(loaded, messages, settings)
    prompt_tokens = int(enc["input_ids"].shape[-1])
    buffer = TokenBuffer()
    abort = threading.Event()
    criteria = EventStoppingCriteria([*stop_events, abort])
    args = {
        **enc,
        "streamer": buffer,
        "stopping_criteria": StoppingCriteriaList([criteria]),
        **generate_kwargs(loaded, settings, prompt_tokens),
    }
    outcome: dict[str, Any] = {}
    thread = threading.Thread(
        target=_run_generate,
        args=(loaded.model, args, buffer, outcome),
        name=f"chatwidget-generate-{loaded.repo_id}",
        daemon=True,
    )
    pieces: list[str] = []

    def emit(piece: str) -> None:
        pieces.append(piece)
        if on_text is not None:
            on_text(piece)

    thread.start()
    try:
        _read_stream(buffer, _TextPieces(loaded.tokenizer, emit), thread)
    except BaseException:
        abort.set()
        raise
    finally:
        thread.join()
    finished = time.perf_counter()
    text = "".join(pieces)
    error = outcome.get("error")
    if error is not None:
        logger.warning("generation on %s failed:\n%s", loaded.repo_id, format_error(error))
        drop_frame_references(error, keep_traceback=False)  # it would keep the model alive
        failure = GenerationError(
            f"generation on {loaded.repo_id} failed: {error}. The partial reply is kept; "
            "try again, or with a shorter conversation or fewer new tokens."
        )
        failure.partial_text = text
        raise failure from error
    out = outcome.get("sequences")
    token_ids = () if out is None else tuple(int(t) for t in out[0, prompt_tokens:].tolist())
    duration = finished - started
    first = criteria.first_token_at
    usage = Usage(
        model=loaded.repo_id,
        prompt_tokens=prompt_tokens,
        new_tokens=len(token_ids),
        time_to_first_token_s=None if first is None else first - started,
        tokens_per_s=len(token_ids) / duration if token_ids and duration > 0 else None,
        duration_s=duration,
    )
    return GenerationResult(text=text, stopped=criteria.stopped, usage=usage, token_ids=token_ids)


def _run_generate(
    model: Any, args: dict[str, Any], buffer: TokenBuffer, outcome: dict[str, Any]
) -> None:
    """Body of the generate thread. A module-level function, not a closure: a closure's
    cells would keep the model alive from any traceback that mentions this frame."""
    try:
        with torch.inference_mode():
            outcome["sequences"] = model.generate(**args)
    except BaseException as exc:  # reported to the caller by stream_reply, never lost
        outcome["error"] = exc
    finally:
        buffer.end()  # generate() ends its streamer itself; this also covers an error


def _read_stream(buffer: TokenBuffer, text: _TextPieces, thread: threading.Thread) -> None:
    """Decode what the generate thread collects, a few tokens at a time, until it ends."""
    while True:
        buffer.wake.wait(DECODE_INTERVAL_S)
        buffer.wake.clear()
        ended = buffer.ended.is_set() or not thread.is_alive()
        ids = buffer.take()
        if ids:
            text.put(torch.tensor(ids))  # type: ignore[no-untyped-call]
        if ended:
            text.end()  # type: ignore[no-untyped-call]  # flush the last line
            return
