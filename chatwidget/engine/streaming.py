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
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from transformers import TextStreamer
from transformers.generation.streamers import BaseStreamer

from chatwidget.engine.context import fit_chat, token_counts
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.memory import drop_frame_references, format_error
from chatwidget.engine.template_cache import cached_template
from chatwidget.engine.types import (
    CheckedChat,
    GenerationResult,
    GenerationSettings,
    Usage,
    validate_settings,
)
from chatwidget.errors import GenerationError, InvalidGenerationRequestError, NoChatTemplateError

logger = logging.getLogger("chatwidget.engine.streaming")

_ROLES = frozenset({"system", "user", "assistant"})
#: How often the streamed ids are turned into text (the first token at once); text goes to
#: the front end at this pace anyway (the widget's delta interval).
DECODE_INTERVAL_S = 0.05


def _fast_decode(tokenizer: Any) -> Callable[[list[int]], str]:
    """``tokenizer.decode(ids, skip_special_tokens=True)``, without its per-call Python work
    where the result is the same: for a Rust-backed tokenizer that does not clean up
    spaces, the backend's own ``decode`` (``tokenizer.decode`` first checks every id in
    Python, which costs more than decoding a few hundred ids)."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    backend = getattr(tokenizer, "_tokenizer", None)
    cls = type(tokenizer)
    if (
        isinstance(tokenizer, TokenizersBackend)
        and cls.decode is TokenizersBackend.decode
        and cls._decode is TokenizersBackend._decode
        and backend is not None
        and hasattr(backend, "decode")
        and not getattr(tokenizer, "clean_up_tokenization_spaces", True)
    ):
        decode = backend.decode
        return lambda ids: decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def _is_cjk(codepoint: int) -> bool:
    """TextStreamer's test for a CJK character (its method does not use ``self``)."""
    return bool(TextStreamer._is_chinese_char(None, codepoint))  # type: ignore[arg-type, no-untyped-call]


def _is_word(text: str) -> bool:
    """Letters (with combining marks), digits and spaces only: TextStreamer prints those at
    once; anything else waits for the next space."""
    return all(c.isspace() or unicodedata.category(c)[0] in "LMN" for c in text)


class _TextPieces:
    """transformers' ``TextStreamer`` rules, on lists of ids, handing each piece to ``emit``.

    The ids of the current line are decoded together (a token's text can depend on its
    neighbours); a piece goes out when it cannot change any more: up to the last space,
    letters and digits at once, the whole line at a newline (keeping its last token as
    context for the next line), CJK characters at once, the rest at the end.
    """

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]) -> None:
        self._decode = _fast_decode(tokenizer)
        self._emit = emit
        self._cache: list[int] = []
        self._printed = 0  # characters of the line's text already handed out
        self.emitted = False  # whether any text went out yet

    def put(self, ids: list[int]) -> None:
        """Add ids to the line and hand out what is final."""
        cache = self._cache
        cache.extend(ids)
        text = self._decode(cache)
        printed = self._printed
        if text.endswith("\n"):
            piece = text[printed:]
            self._cache = cache[-1:]
            self._printed = len(self._decode(self._cache))
        elif (text and _is_cjk(ord(text[-1]))) or _is_word(text[printed:]):
            piece = text[printed:]
            self._printed += len(piece)
        else:
            piece = text[printed : text.rfind(" ") + 1]
            self._printed += len(piece)
        self._send(piece)

    def end(self, ids: list[int]) -> None:
        """Add the last ids and hand out everything left (one decode)."""
        self._cache.extend(ids)
        piece = self._decode(self._cache)[self._printed :] if self._cache else ""
        self._cache, self._printed = [], 0
        self._send(piece)

    def _send(self, piece: str) -> None:
        if piece:
            self.emitted = True
            self._emit(piece)


class _Abort(Exception):  # noqa: N818 - not an error: the way out of generate()
    """Raised from the streamer to end ``generate`` at once (a stop, or ``on_text`` failed)."""


class TokenStream(BaseStreamer):
    """What ``model.generate`` streams into, on the generating thread itself.

    ``ids`` are the new tokens; ``stopped`` says a stop event ended generation;
    ``first_token_at`` is when the first token came (``perf_counter``); ``error`` is what
    ``emit`` raised, if anything (generation was ended at once, and the caller re-raises it).
    Per token, :meth:`put` keeps the id, checks the stop events and reads the clock; the
    ids collected are decoded at most every :data:`DECODE_INTERVAL_S` (every token until
    the first text is out).
    """

    def __init__(
        self, tokenizer: Any, emit: Callable[[str], None], stop_events: Sequence[threading.Event]
    ) -> None:
        self.ids: list[int] = []
        self.stopped = False
        self.first_token_at: float | None = None
        self.error: BaseException | None = None
        self._decoded = 0  # ids[:_decoded] went to the decoder
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
        self.ids += ids
        for event in self._stops:
            if event.is_set():
                self.stopped = True
                raise _Abort
        now = time.perf_counter()
        if now < self._next_decode:
            return
        if self.first_token_at is None:
            self.first_token_at = now
        self._decode(now)

    def end(self) -> None:
        """generate() is done; :meth:`finish` flushes (outside generate, so that what
        ``emit`` raises there is not taken for a generation error)."""

    def finish(self) -> None:
        """Decode what is left and flush the last line (``emit``'s errors propagate)."""
        self._text.end(self._take())

    def _take(self) -> list[int]:
        ids = self.ids[self._decoded :]
        self._decoded = len(self.ids)
        return ids

    def _decode(self, now: float) -> None:
        """Inside generate(): decode the ids collected; if ``emit`` raises, end generation."""
        try:
            self._text.put(self._take())
        except Exception as exc:
            self.error = exc
            raise _Abort from None
        if self._text.emitted:  # until the first text is out, every token is decoded
            self._next_decode = now + DECODE_INTERVAL_S


def validate_request(messages: Sequence[Mapping[str, str]], settings: GenerationSettings) -> None:
    """Raise :class:`InvalidGenerationRequestError` for malformed messages or settings
    (messages in a :class:`CheckedChat` were checked where they were made)."""
    if not messages:
        raise InvalidGenerationRequestError("messages is empty: send at least one user message.")
    for i, message in enumerate(() if isinstance(messages, CheckedChat) else messages):
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
    chat = _with_system_prompt(messages, settings.system_prompt)
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
    return _as_tensors(fitted.encoding, loaded.model.device)


def _as_tensors(encoding: Any, device: Any = None) -> dict[str, Any]:
    """The tokenizer's lists as a batch of one, in tensors on ``device``: through numpy,
    because ``torch.tensor`` of a list of ints costs about a microsecond per token (tens of
    milliseconds for a long prompt); a plain dict, moved only off the CPU (a
    ``BatchEncoding`` and its ``.to`` cost more than the conversion itself)."""
    data = dict(encoding)
    if not all(isinstance(v, list) for v in data.values()):
        data = dict(encoding.convert_to_tensors("pt", prepend_batch_axis=True))
    else:
        data = {k: torch.from_numpy(np.array([v], np.int64)) for k, v in data.items()}
    if device is not None and torch.device(device).type != "cpu":
        data = {k: v.to(device) for k, v in data.items()}
    return data


def _with_system_prompt(
    messages: Sequence[Mapping[str, str]], system_prompt: str
) -> list[dict[str, str]]:
    """:func:`build_chat` without copying every message: fitting reads only ``role`` and
    ``content`` of the newest ones, and :func:`_apply_template` copies those it keeps."""
    chat = cast("list[dict[str, str]]", list(messages))
    if system_prompt:
        if chat and chat[0]["role"] == "system":
            chat = chat[1:]
        chat.insert(0, {"role": "system", "content": system_prompt})
    return chat


def _apply_template(loaded: LoadedModel, chat: Sequence[Mapping[str, str]]) -> Any:
    """The chat template applied to ``chat`` and tokenized, as lists (no tensors).

    The same ids as ``apply_chat_template(..., tokenize=True)``, which renders and then
    tokenizes the text with ``add_special_tokens=False``; done in two steps, a fitting
    check costs no tensors and no per-token Python work.
    """
    tokenizer = loaded.tokenizer

    def build() -> Any:
        messages = [{"role": m["role"], "content": m["content"]} for m in chat]
        try:
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return tokenizer(text, add_special_tokens=False)
        except Exception as exc:
            raise InvalidGenerationRequestError(
                f"the chat template of {loaded.repo_id} rejected this conversation: {exc}"
            ) from exc

    return cached_template(tokenizer, chat, build)  # the same messages again: Regenerate


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
