"""Stream one reply from a loaded model: chat template, streamed text, stop, usage.

``model.generate`` runs in the calling thread and streams into a :class:`TokenStream`, a
transformers streamer whose ``put`` runs once per token and does almost nothing: it keeps
the token id and checks the stop events (raising to end ``generate`` at once, so the token
of the step during which a stop was set is kept, and no further step runs). Until the first
words are out, and then every :data:`DECODE_INTERVAL_S`, it turns the ids collected into text
with transformers' own ``TextStreamer`` rules (text up to the last space, flushed at each
newline and at the end) and hands the pieces to ``on_text``. Decoding a few tokens at a
time, instead of the whole line again for every token, keeps the cost per token constant,
and the pieces add up to exactly the same text. No helper thread, no queue: nothing per
token waits for another thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import TextStreamer
from transformers.generation.streamers import BaseStreamer

from chatwidget.engine.context import fit_chat, token_counts
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.memory import drop_frame_references, format_error
from chatwidget.engine.types import GenerationResult, GenerationSettings, Usage, validate_settings
from chatwidget.errors import GenerationError, InvalidGenerationRequestError, NoChatTemplateError

logger = logging.getLogger("chatwidget.engine.streaming")

_ROLES = frozenset({"system", "user", "assistant"})
#: How often the streamed ids are turned into text (the first token at once); text goes to
#: the front end at this pace anyway (the widget's delta interval).
DECODE_INTERVAL_S = 0.05


class _TextPieces(TextStreamer):
    """transformers' ``TextStreamer`` rules, handing each finished piece to ``emit``."""

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self._emit = emit
        self.emitted = False  # whether any text went out yet

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.emitted = True
            self._emit(text)


class _Abort(Exception):  # noqa: N818 - not an error: the way out of generate()
    """Raised from the streamer to end ``generate`` at once (a stop, or ``on_text`` failed)."""


class TokenStream(BaseStreamer):
    """What ``model.generate`` streams into, on the generating thread itself.

    ``ids`` are the new tokens; ``stopped`` says a stop event ended generation;
    ``first_token_at`` is when the first token came (``perf_counter``); ``error`` is what
    ``emit`` raised, if anything (generation was ended at once, and the caller re-raises it).
    """

    def __init__(
        self, tokenizer: Any, emit: Callable[[str], None], stop_events: Sequence[threading.Event]
    ) -> None:
        self.ids: list[int] = []
        self.stopped = False
        self.first_token_at: float | None = None
        self.error: BaseException | None = None
        self._pending: list[int] = []
        self._text = _TextPieces(tokenizer, emit)
        self._stops = tuple(stop_events)
        self._prompt = True
        self._next_decode = 0.0

    def put(self, value: Any) -> None:
        if self._prompt:  # generate() puts the prompt first
            self._prompt = False
            return
        ids = value.tolist()
        if ids and isinstance(ids[0], list):
            if len(ids) > 1:
                raise ValueError("streaming supports batch size 1 only")
            ids = ids[0]
        self.ids.extend(ids)
        self._pending.extend(ids)
        for event in self._stops:
            if event.is_set():
                self.stopped = True
                raise _Abort
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        elif now < self._next_decode and self._text.emitted:
            return  # until the first words are out, every token is decoded at once
        self._next_decode = now + DECODE_INTERVAL_S
        self._decode()

    def end(self) -> None:
        """generate() is done; :meth:`finish` flushes (outside generate, so that what
        ``emit`` raises there is not taken for a generation error)."""

    def finish(self) -> None:
        """Decode what is left and flush the last line (``emit``'s errors propagate)."""
        ids, self._pending = self._pending, []
        if ids:
            self._text.put(torch.tensor(ids))  # type: ignore[no-untyped-call]
        self._text.end()  # type: ignore[no-untyped-call]

    def _decode(self) -> None:
        """Inside generate(): decode the ids collected; if ``emit`` raises, end generation."""
        ids, self._pending = self._pending, []
        if not ids:
            return
        try:
            self._text.put(torch.tensor(ids))  # type: ignore[no-untyped-call]
        except Exception as exc:
            self.error = exc
            raise _Abort from None


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
    pieces: list[str] = []

    def emit(piece: str) -> None:
        pieces.append(piece)
        if on_text is not None:
            on_text(piece)

    stream = TokenStream(loaded.tokenizer, emit, stop_events)
    args = {**enc, "streamer": stream, **generate_kwargs(loaded, settings, prompt_tokens)}
    error = _generate(loaded.model, args)
    del args
    if stream.error is not None:
        raise stream.error
    stream.finish()
    finished = time.perf_counter()
    text = "".join(pieces)
    if error is not None:
        logger.warning("generation on %s failed:\n%s", loaded.repo_id, format_error(error))
        drop_frame_references(error, keep_traceback=False)  # it would keep the model alive
        failure = GenerationError(
            f"generation on {loaded.repo_id} failed: {error}. The partial reply is kept; "
            "try again, or with a shorter conversation or fewer new tokens."
        )
        failure.partial_text = text
        raise failure from error
    token_ids = tuple(stream.ids)
    duration = finished - started
    first = stream.first_token_at
    usage = Usage(
        model=loaded.repo_id,
        prompt_tokens=prompt_tokens,
        new_tokens=len(token_ids),
        time_to_first_token_s=None if first is None else first - started,
        tokens_per_s=len(token_ids) / duration if token_ids and duration > 0 else None,
        duration_s=duration,
    )
    return GenerationResult(text=text, stopped=stream.stopped, usage=usage, token_ids=token_ids)


def _generate(model: Any, args: dict[str, Any]) -> Exception | None:
    """Run ``model.generate``; returns what it raised (None when it ended, or was ended by
    the stream). A module-level function, so that no closure of the caller's keeps the
    model alive from a traceback."""
    try:
        with torch.inference_mode():
            model.generate(**args)
    except _Abort:
        return None
    except Exception as exc:  # reported to the caller by stream_reply, never lost
        return exc
    return None
