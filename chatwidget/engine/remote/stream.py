"""Stream one reply from an OpenAI-compatible server through the official ``openai`` client.

The request is a Chat Completion with ``stream=True`` and ``stream_options={"include_usage":
True}``. Text pieces go to ``on_text`` as chunks arrive. Stop is honoured twice over:

- between chunks: once a stop event is set, the next chunk read is the last, and the stream
  is closed, which closes the connection, so the server sees the client go;
- while blocked waiting for a chunk (a slow or stalled server): a small watcher thread shuts
  the connection's socket down at once, which wakes the read. It is armed only until the
  server says the reply is finished, so it never touches a connection the pool reuses.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from chatwidget.engine.remote.errors_map import classify
from chatwidget.engine.remote.servers import RemoteServer
from chatwidget.engine.remote.thread_pool import ThreadPool
from chatwidget.engine.types import GenerationResult, GenerationSettings, Usage
from chatwidget.errors import BadResponseError, RemoteError, StreamDroppedError

logger = logging.getLogger("chatwidget.engine.remote")

#: How often the stop watcher checks that the reply is still streaming (it reacts to the
#: caller's stop at once; this only bounds how long it outlives the reply).
WATCH_INTERVAL_S = 0.25


def request_args(
    model_id: str, chat: Sequence[dict[str, str]], settings: GenerationSettings
) -> dict[str, Any]:
    """The Chat Completion arguments for one streamed reply; greedy is ``temperature=0``."""
    args: dict[str, Any] = {
        "model": model_id,
        "messages": list(chat),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": settings.max_new_tokens,
    }
    if settings.do_sample:
        args["temperature"] = settings.temperature
        args["top_p"] = settings.top_p
    else:
        args["temperature"] = 0.0
    return args


def open_stream(client: openai.OpenAI, args: dict[str, Any]) -> openai.Stream[ChatCompletionChunk]:
    """``client.chat.completions.create(**args)`` for arguments made by :func:`request_args`.

    The same request (body, bearer key, timeout, errors, the client's own SSE parsing), posted
    with the client's ``post``: ``create`` first walks its TypedDict of every Chat Completion
    parameter over the arguments, which for these plain strings and numbers changes nothing
    and cost 0.48 ms of Python per reply here (half of ``create``'s own time, and 6 % of a
    tiny model's time to first token on loopback). Only the bearer key is sent, as ``create``
    sends it (never an admin key from the environment).
    """
    return client.post(
        "/chat/completions",
        body=args,
        cast_to=ChatCompletion,
        options={"security": {"bearer_auth": True}},
        stream=True,
        stream_cls=openai.Stream[ChatCompletionChunk],
    )


class StopWatcher:
    """Shuts the stream's socket down when a stop event is set, while it is armed.

    The watching runs on a thread of ``threads`` (the engine's, reused between replies:
    starting a thread for each reply cost a remote reply's first token about 0.15 ms).
    """

    def __init__(
        self, response: Any, stops: Sequence[threading.Event], threads: ThreadPool
    ) -> None:
        self._lock = threading.Lock()
        self._armed = True
        self.fired = False
        self._stops = tuple(stops)
        self._socket = _socket_of(response)
        if self._socket is not None and self._stops:
            threads.run(self._watch)

    def disarm(self) -> None:
        """From now on, never touch the socket (the reply is over, or ending in this thread)."""
        with self._lock:
            self._armed = False

    def _watch(self) -> None:
        first, rest = self._stops[0], self._stops[1:]
        while True:
            stopped = first.wait(WATCH_INTERVAL_S) or any(e.is_set() for e in rest)
            with self._lock:
                if not self._armed:
                    return
                if stopped:
                    self.fired = True
                    self._armed = False
                    if self._socket is not None:
                        with contextlib.suppress(OSError):
                            # the plain-socket shutdown also works under TLS, from any thread
                            socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
                    return


def _socket_of(response: Any) -> socket.socket | None:
    """The connection's socket, from httpx's documented ``network_stream`` extension."""
    stream = getattr(response, "extensions", {}).get("network_stream")
    if stream is None:
        return None
    sock = stream.get_extra_info("socket")
    return sock if isinstance(sock, socket.socket) else None


class _CallbackError(Exception):
    """Carries an exception raised by ``on_text`` past the stream's own error handling."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


@dataclass
class _Progress:
    pieces: list[str]
    chunks: int = 0
    content_chunks: int = 0
    first_text_at: float | None = None
    finished: bool = False
    usage: Any = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def stream_reply(
    stream: openai.Stream[ChatCompletionChunk],
    *,
    server: RemoteServer,
    key: str,
    model_id: str,
    read_timeout_s: float,
    on_text: Callable[[str], None] | None,
    stops: Sequence[threading.Event],
    started: float,
    threads: ThreadPool,
) -> GenerationResult:
    """Read an opened ``stream`` to its end or to a stop, and close it (``threads`` watch
    for the stop meanwhile).

    ``started`` is when the request was made (``time.perf_counter()``), for the usage.
    Raises a :class:`RemoteError` with ``partial_text`` set when the stream fails, and
    re-raises whatever ``on_text`` raises after closing the stream.
    """
    progress = _Progress(pieces=[])
    watcher: StopWatcher | None = None
    try:
        _check_event_stream(stream, server)
        watcher = StopWatcher(stream.response, stops, threads)
        _read(stream, progress, on_text, stops, watcher)
    except _CallbackError as wrapped:
        raise wrapped.error from None
    except RemoteError as exc:
        exc.partial_text = progress.text
        raise
    except (openai.OpenAIError, ValueError) as exc:
        if any(e.is_set() for e in stops):
            logger.debug("%s: stream ended by stop (%s)", key, type(exc).__name__)
        else:
            error = classify(
                exc,
                server=server,
                model_id=model_id,
                doing="streaming the reply",
                streaming=True,
                read_timeout_s=read_timeout_s,
            )
            error.partial_text = progress.text
            raise error from None
    finally:
        if watcher is not None:
            watcher.disarm()
        with contextlib.suppress(Exception):
            stream.close()
    stopped = any(e.is_set() for e in stops) and not progress.finished
    if not stopped and not progress.finished:
        _raise_incomplete(progress, server)
    return _result(key, progress, started, stopped=stopped)


def _check_event_stream(stream: openai.Stream[ChatCompletionChunk], server: RemoteServer) -> None:
    content_type = stream.response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        shown = content_type.split(";")[0] or "no content type"
        raise BadResponseError(
            f"Server {server.name!r} ({server.base_url}) answered with {shown} instead of an "
            "event stream (SSE). Check that the URL is its OpenAI-compatible API (it usually "
            "ends with /v1)."
        )


def _read(
    stream: openai.Stream[ChatCompletionChunk],
    progress: _Progress,
    on_text: Callable[[str], None] | None,
    stops: Sequence[threading.Event],
    watcher: StopWatcher,
) -> None:
    if any(e.is_set() for e in stops):
        return  # stopped while the request was being answered
    for chunk in stream:
        progress.chunks += 1
        if chunk.usage is not None:
            progress.usage = chunk.usage
        for choice in chunk.choices:
            piece = choice.delta.content if choice.delta is not None else None
            if piece:
                if progress.first_text_at is None:
                    progress.first_text_at = time.perf_counter()
                progress.content_chunks += 1
                progress.pieces.append(piece)
                if on_text is not None:
                    try:
                        on_text(piece)
                    except Exception as exc:
                        raise _CallbackError(exc) from exc
            if choice.finish_reason is not None:
                progress.finished = True
                watcher.disarm()  # what is left is the usage and [DONE]: let it finish
        if not progress.finished and any(e.is_set() for e in stops):
            return


def _raise_incomplete(progress: _Progress, server: RemoteServer) -> None:
    if progress.chunks == 0:
        raise BadResponseError(
            f"Server {server.name!r} ({server.base_url}) sent an empty event stream: no reply "
            "came. Check that the URL is its OpenAI-compatible API, then retry."
        )
    error = StreamDroppedError(
        f"The reply from server {server.name!r} ended before the server said it was finished "
        "(the connection closed early). The partial reply is kept; retry to get a whole one."
    )
    error.partial_text = progress.text
    raise error


def _result(key: str, progress: _Progress, started: float, *, stopped: bool) -> GenerationResult:
    duration = time.perf_counter() - started
    usage = progress.usage
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = getattr(usage, "completion_tokens", None)
    new_tokens = int(completion) if completion is not None else progress.content_chunks
    first = progress.first_text_at
    return GenerationResult(
        text=progress.text,
        stopped=stopped,
        usage=Usage(
            model=key,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
            time_to_first_token_s=None if first is None else first - started,
            tokens_per_s=new_tokens / duration if new_tokens and duration > 0 else None,
            duration_s=duration,
        ),
    )
