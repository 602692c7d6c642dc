"""The delta stream: the one place streamed text goes on its way to the front end.

A reply's text pieces arrive on the reply thread (:meth:`DeltaStream.append`, O(1): a list
append under a lock). The widget's publisher thread takes what has collected since its last
visit as one numbered *chunk* of that message (:meth:`DeltaStream.take`) and sends it as a
small ``delta`` message. Chunks are numbered from 0 per message, so a front end that gets a
snapshot (the text of chunks ``0..n-1`` and ``n``) and then deltas knows which deltas it
already has and which one it missed.

When the reply ends its full text goes to the conversation store once
(:meth:`DeltaStream.close` returns it); text not yet taken is not sent as a delta, because
the final message carries it.

A durable store hooks in here too: ``open(..., on_append=poke)`` calls ``poke()`` after
every piece, on the reply thread, with no lock held. It must be O(1), like
:meth:`chatwidget.history.checkpoint.Checkpointer.poke`, whose writer thread then reads the
text so far with :meth:`DeltaStream.text`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Delta:
    """Text appended to one message: chunk ``index`` (from 0) of its streamed text."""

    conversation_id: str
    message_id: str
    index: int
    text: str


@dataclass
class _Stream:
    conversation_id: str
    sent: list[str] = field(default_factory=list)  # text of the chunks taken so far
    chunks: int = 0  # how many chunks were taken
    pending: list[str] = field(default_factory=list)  # pieces since the last take
    on_append: Callable[[], None] | None = None


class DeltaStream:
    """Streamed text of the replies in progress, keyed by message id. Thread-safe.

    ``on_pending`` is called (once per chunk, not per piece) when text starts collecting
    after a :meth:`take`, so the publisher wakes up only when there is something to send;
    unless ``send_now`` (the widget's) sends the text at once, from the appending thread.
    """

    def __init__(self, on_pending: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._on_pending = on_pending
        #: Tried first when text starts collecting (on the appending thread, no lock held):
        #: returns True when it sent the text itself, and then ``on_pending`` is not called.
        self.send_now: Callable[[], bool] | None = None
        self.pieces = 0  # pieces appended so far (for tests and benchmarks)

    def open(
        self,
        conversation_id: str,
        message_id: str,
        on_append: Callable[[], None] | None = None,
    ) -> None:
        """Start collecting the text of message ``message_id``; ``on_append`` (O(1), e.g. a
        checkpointer's ``poke``) is called after every piece."""
        with self._lock:
            self._streams[message_id] = _Stream(conversation_id, on_append=on_append)

    def append(self, message_id: str, piece: str) -> None:
        """Add a piece of text (the reply thread, once per token). Unknown ids are ignored."""
        with self._lock:
            stream = self._streams.get(message_id)
            if stream is None:
                return
            wake = not stream.pending
            stream.pending.append(piece)
            self.pieces += 1
        if wake:
            send_now = self.send_now
            if (send_now is None or not send_now()) and self._on_pending is not None:
                self._on_pending()
        if stream.on_append is not None:
            stream.on_append()

    def take(self) -> list[Delta]:
        """The text collected since the last call, one chunk per message (the publisher)."""
        out: list[Delta] = []
        with self._lock:
            for message_id, stream in self._streams.items():
                if stream.pending:
                    text = "".join(stream.pending)
                    stream.pending.clear()
                    out.append(Delta(stream.conversation_id, message_id, stream.chunks, text))
                    stream.sent.append(text)
                    stream.chunks += 1
        return out

    def snapshot(self, message_id: str) -> tuple[str, int] | None:
        """(text of the chunks taken so far, how many) for a message being streamed."""
        with self._lock:
            stream = self._streams.get(message_id)
            if stream is None:
                return None
            if len(stream.sent) > 1:  # join once; later snapshots reuse it
                stream.sent[:] = ["".join(stream.sent)]
            return (stream.sent[0] if stream.sent else ""), stream.chunks

    def text(self, message_id: str) -> str | None:
        """All text of a message being streamed so far (taken or not), else None."""
        with self._lock:
            stream = self._streams.get(message_id)
            return None if stream is None else "".join(stream.sent + stream.pending)

    def streaming(self) -> bool:
        """Whether any message is being streamed."""
        with self._lock:
            return bool(self._streams)

    def close(self, message_id: str) -> str:
        """Stop streaming a message; returns all of its text (taken and not)."""
        with self._lock:
            stream = self._streams.pop(message_id, None)
        if stream is None:
            return ""
        return "".join(stream.sent + stream.pending)
