"""Checkpointer: saves a streaming reply at most once per interval, whatever the token rate.

The reply thread calls :meth:`Checkpointer.poke` after every streamed piece. A poke costs a
flag test (O(1)); the first poke after a write schedules one write with the store, due one
interval after the previous write. When it is due, the store's writer calls back for the
text so far. So a reply is written at most once per interval, and text that arrived is on
disk at most one interval (plus one commit) later, even if the model then stalls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from chatwidget.history.changes import Change
from chatwidget.history.store import Store


class Checkpointer:
    """Schedules the checkpoints of one streaming message with a store.

    Args:
        store: where to schedule the writes.
        key: the message id (one scheduled write per key at a time).
        produce: builds the checkpoint change (the text so far); called on the store's
            writer thread; returns None when there is nothing to write any more.
        interval: the least time between two writes, in seconds.
        clock: a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        store: Store,
        key: str,
        produce: Callable[[], Change | None],
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._key = key
        self._produce = produce
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()  # the message's insert counts as its first write
        self._scheduled = False
        self._closed = False
        self.writes = 0

    def poke(self) -> None:
        """New text arrived: make sure a write is scheduled. O(1); never blocks on I/O."""
        if self._scheduled:  # the fast path, taken by every token but one per interval
            return
        with self._lock:
            if self._scheduled or self._closed:
                return
            self._scheduled = True
            due = max(self._clock(), self._last + self._interval)
        self._store.schedule(self._key, due, self._fire)

    def arm(self) -> None:
        """Schedule the first write now, at the start of the reply, where the store's writer
        is told about the reply anyway: the first piece's :meth:`poke`, at the time to first
        token, then finds it scheduled and wakes no thread."""
        self.poke()

    def close(self) -> None:
        """The reply ended (its final text is submitted separately): drop a pending write."""
        with self._lock:
            self._closed = True
        self._store.cancel(self._key)

    def _fire(self) -> Change | None:
        with self._lock:
            self._scheduled = False
            self._last = self._clock()
            if self._closed:
                return None
            self.writes += 1
        return self._produce()
