"""Immutable orchestrator events and their ordered fan-out to subscribers."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from chatwidget.downloads.types import DownloadProgress
from chatwidget.failure import Failure
from chatwidget.orchestrator.lifecycle import ModelState

logger = logging.getLogger("chatwidget.orchestrator.events")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event; ``seq`` increases by one per event, from 1."""

    seq: int


@dataclass(frozen=True, kw_only=True)
class StateChanged(Event):
    """A model moved through the lifecycle. ``error`` and ``failure`` are set on FAILED.

    ``cold_swap`` is set on READY when the load unloaded a conversation's own active
    model first because both would not fit.
    """

    repo_id: str
    old: ModelState
    new: ModelState
    error: str | None = None
    failure: Failure | None = None
    cold_swap: bool = False


@dataclass(frozen=True, kw_only=True)
class ProgressChanged(Event):
    """Download progress of a model that is DOWNLOADING."""

    repo_id: str
    progress: DownloadProgress


@dataclass(frozen=True, kw_only=True)
class Switched(Event):
    """Conversation ``conversation_id`` now chats with ``repo_id`` (it is on screen)."""

    conversation_id: str
    repo_id: str


@dataclass(frozen=True, kw_only=True)
class ErrorReported(Event):
    """Something failed and was contained. ``source``: download, load, subscriber, worker.

    ``failure`` is the structured form (kind, retryable, action) when a model failed.
    """

    source: str
    repo_id: str | None
    message: str
    failure: Failure | None = None


@dataclass(frozen=True, kw_only=True)
class Evicted(Event):
    """``repo_id`` was unloaded and is DOWNLOADED again; ``freed_bytes`` is what it took.

    ``reason``: "evicted" (room for another model, or lowered memory limits), "idle"
    (unused for ``keep_alive``) or "unload" (an explicit unload). Conversations that chatted
    on it keep it as their model: it loads again on their next message.
    """

    repo_id: str
    reason: str = "evicted"
    freed_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class NoteChanged(Event):
    """A status text of ``repo_id`` changed (None: cleared), e.g. "waiting for the reply on X
    to finish" while it waits in Compiling, or "Waiting for another download of X"."""

    repo_id: str
    note: str | None


Subscriber = Callable[[Event], None]


class EventBus:
    """Numbers events and delivers them to subscribers in ``seq`` order.

    ``publish`` is called while the caller holds the orchestrator's ``state_lock``, so the
    numbering follows the order of the state changes. ``deliver`` is called after that
    lock is released. One thread at a time delivers, oldest first, everything published
    so far, including what other threads publish meanwhile; a thread that finds delivery
    under way returns at once and leaves its events to the deliverer, so no thread ever
    waits on another's subscribers (and a subscriber that calls back in cannot deadlock).
    A subscriber that raises is logged and reported as an :class:`ErrorReported` event;
    it does not stop delivery nor the caller.
    """

    def __init__(self, state_lock: threading.RLock) -> None:
        self._state_lock = state_lock
        self._seq = 0
        self._outbox: deque[Event] = deque()
        self._subscribers: list[Subscriber] = []
        self._subscribers_lock = threading.Lock()
        self._delivery_lock = threading.Lock()

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the latest event published (0 before any)."""
        return self._seq

    @property
    def idle(self) -> bool:
        """True when every published event has been handed to the subscribers."""
        return not self._outbox and not self._delivery_lock.locked()

    def next_seq(self) -> int:
        """Reserve the next sequence number (call under the state lock)."""
        self._seq += 1
        return self._seq

    def publish(self, event: Event) -> None:
        """Queue ``event`` for delivery; its ``seq`` must come from :meth:`next_seq`."""
        self._outbox.append(event)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add ``callback``; return a function that removes it (safe to call twice)."""
        with self._subscribers_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def deliver(self) -> None:
        """Hand every queued event to every subscriber, oldest first.

        Returns at once when another call (in this thread or another) is delivering: that
        call re-checks the outbox after letting go, so nothing is left behind.
        """
        while self._outbox:
            if not self._delivery_lock.acquire(blocking=False):
                return
            try:
                while self._outbox:
                    self._fan_out(self._outbox.popleft())
            finally:
                self._delivery_lock.release()

    def _fan_out(self, event: Event) -> None:
        with self._subscribers_lock:
            subscribers = tuple(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception as exc:
                logger.exception("event subscriber %r raised on %r", callback, event)
                if isinstance(event, ErrorReported) and event.source == "subscriber":
                    continue  # never report a report: a subscriber that always raises would loop
                self._report_subscriber_error(exc)

    def _report_subscriber_error(self, exc: Exception) -> None:
        # Numbering must stay in step with publishers, who hold the state lock.
        with self._state_lock:
            self.publish(
                ErrorReported(
                    seq=self.next_seq(),
                    source="subscriber",
                    repo_id=None,
                    message=str(exc) or repr(exc),
                )
            )
