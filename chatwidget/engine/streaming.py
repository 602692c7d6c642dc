"""Stream one reply from a loaded model: chat template, streamer thread, stop, usage.

``model.generate`` runs in a helper thread and feeds a ``TextIteratorStreamer``;
the calling thread reads text pieces and hands them to ``on_text``. A
``StoppingCriteria`` bound to stop events ends generation at the next decoding
step, and also records when the first token came and how many steps ran.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from chatwidget.engine.context import fit_chat, token_counts
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.memory import drop_frame_references, format_error
from chatwidget.engine.types import GenerationResult, GenerationSettings, Usage, validate_settings
from chatwidget.errors import GenerationError, InvalidGenerationRequestError, NoChatTemplateError

logger = logging.getLogger("chatwidget.engine.streaming")

_ROLES = frozenset({"system", "user", "assistant"})
#: How often the reading thread wakes to check that the generate thread is still alive.
POLL_INTERVAL_S = 0.05


class EventStoppingCriteria(StoppingCriteria):
    """Stops generation at the next step once any of ``events`` is set; counts steps."""

    def __init__(self, events: Sequence[threading.Event]) -> None:
        self._events = tuple(events)
        self.steps = 0
        self.first_token_at: float | None = None
        self.stopped = False

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.steps += 1
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if any(event.is_set() for event in self._events):
            self.stopped = True
        return torch.full(
            (input_ids.shape[0],), self.stopped, dtype=torch.bool, device=input_ids.device
        )


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
    streamer = TextIteratorStreamer(
        loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=POLL_INTERVAL_S
    )
    abort = threading.Event()
    criteria = EventStoppingCriteria([*stop_events, abort])
    args = {
        **enc,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([criteria]),
        **generate_kwargs(loaded, settings, prompt_tokens),
    }
    outcome: dict[str, Any] = {}
    thread = threading.Thread(
        target=_run_generate,
        args=(loaded.model, args, streamer, outcome),
        name=f"chatwidget-generate-{loaded.repo_id}",
        daemon=True,
    )
    pieces: list[str] = []
    thread.start()
    try:
        _read_stream(streamer, thread, pieces, on_text)
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
    model: Any, args: dict[str, Any], streamer: TextIteratorStreamer, outcome: dict[str, Any]
) -> None:
    """Body of the generate thread. A module-level function, not a closure: a closure's
    cells would keep the model alive from any traceback that mentions this frame."""
    try:
        with torch.inference_mode():
            outcome["sequences"] = model.generate(**args)
    except BaseException as exc:  # reported to the caller by stream_reply, never lost
        outcome["error"] = exc
        try:
            streamer.end()  # type: ignore[no-untyped-call]  # flush partial text, wake the reader
        except Exception:
            streamer.text_queue.put(streamer.stop_signal)


def _read_stream(
    streamer: TextIteratorStreamer,
    thread: threading.Thread,
    pieces: list[str],
    on_text: Callable[[str], None] | None,
) -> None:
    iterator = iter(streamer)
    while True:
        try:
            piece = next(iterator)
        except StopIteration:
            return
        except queue.Empty:
            if thread.is_alive():
                continue
            _drain(streamer, pieces, on_text)  # the thread ended without a stop signal
            return
        if piece:
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)


def _drain(
    streamer: TextIteratorStreamer, pieces: list[str], on_text: Callable[[str], None] | None
) -> None:
    while True:
        try:
            piece = streamer.text_queue.get_nowait()
        except queue.Empty:
            return
        if piece is streamer.stop_signal:
            return
        if piece:
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
