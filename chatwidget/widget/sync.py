"""The one thread that writes a widget's traits, each batch with a ``seq``, and numbers the deltas.

Everything that changes what the UI shows (intents on the kernel's main thread, orchestrator
events on its worker, streamed text on a reply thread) only *pokes* the publisher. The
publisher then takes what changed, renders only that, and writes it in one ``hold_sync``
batch together with the next sequence number (trait ``seq``): progress at most once per
``trait_interval``, anything else (a turn boundary, a rename) at its next round. It sends
the streamed text collected since its last round as small ``delta`` messages, a round at
most every ``delta_interval``, each with the next number too. A local reply's text is
usually sent by the reply thread itself, as it is decoded (:meth:`Publisher.send_deltas_now`:
under the same lock, at most once per ``delta_interval``, and only when no trait change
waits to go first), because waking this thread in the middle of a generation makes the two
take turns with the interpreter, which costs the reply more than the sending does.
Nothing it does per round depends on how long a conversation is.

:attr:`Publisher.lock` orders everything that carries a ``seq``: the kernel's main thread
takes it to answer with the last number sent (replies, ``resync`` snapshots), so a snapshot
is never older than a batch the front end already has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from chatwidget.session.deltas import Delta

log = logging.getLogger("chatwidget.widget.sync")


class Publisher:
    """Coalesces state changes into trait writes and deltas on a single background thread.

    - ``take_changes()`` returns what changed since the last call (anything the renderer
      understands; empty when nothing did);
    - ``render(changes)`` returns trait values for them;
    - ``apply(values)`` writes traits (``values`` includes ``"seq"``) in one batch;
    - ``take_deltas()`` returns the streamed text waiting to go out;
    - ``send(message)`` sends one custom message;
    - ``urgent()`` says whether the changes waiting must go out without waiting for
      ``trait_interval`` (a turn boundary, say; progress alone can wait);
    - ``changes_waiting()`` says whether trait changes that must reach the front end before
      streamed text are waiting (see :meth:`send_deltas_now`).
    """

    def __init__(
        self,
        *,
        take_changes: Callable[[], Collection[Any]],
        render: Callable[[Collection[Any]], Mapping[str, Any]],
        apply: Callable[[dict[str, Any]], None],
        take_deltas: Callable[[], list[Delta]],
        send: Callable[[dict[str, Any]], None],
        urgent: Callable[[], bool] | None = None,
        changes_waiting: Callable[[], bool] | None = None,
        trait_interval: float = 0.1,
        delta_interval: float = 0.05,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "chatwidget-publisher",
    ) -> None:
        self._take_changes = take_changes
        self._render = render
        self._apply = apply
        self._take_deltas = take_deltas
        self._send = send
        self._urgent = urgent
        self._changes_waiting = changes_waiting
        self._last_sent_now = float("-inf")  # when send_deltas_now last sent
        self._trait_interval = trait_interval
        self._delta_interval = delta_interval
        self._on_error = on_error
        self.lock = threading.Lock()
        self.seq = 0  # the last sequence number sent; read under ``lock``
        self.writes = 0  # trait batches written (for benchmarks and tests)
        self.deltas_sent = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0  # poke generation
        self._flushing = 0  # callers waiting in flush(): their round goes at once, in full
        self._published = 0  # last generation fully published
        self._last_traits = float("-inf")
        self._last_round = float("-inf")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def poke(self) -> int:
        """Ask for a round soon; returns the generation number to :meth:`flush` on."""
        with self._cond:
            self._requested += 1
            gen = self._requested
        self._wake.set()
        return gen

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything poked so far is published. True on success.

        The round it asks for goes at once and sends everything (no ``delta_interval`` or
        ``trait_interval`` wait): a caller waiting on it is waiting for the UI.
        """
        with self._cond:
            self._flushing += 1
        try:
            gen = self.poke()
            deadline = time.monotonic() + timeout
            with self._cond:
                while self._published < gen:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(left)
            return True
        finally:
            with self._cond:
                self._flushing -= 1

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is pending, then stop the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._stopping.is_set() and not self._due_now():
                self._pause()
            self._wake.clear()
            stopping = self._stopping.is_set()
            with self._cond:
                flushing = self._flushing > 0
                gen = self._requested
            deferred = False
            try:
                deferred = self._round(force=stopping or flushing)
            except Exception as exc:
                log.exception("Publishing widget state failed")
                if self._on_error is not None:
                    try:
                        self._on_error(exc)
                    except Exception:
                        log.exception("The publisher's error handler failed")
            if deferred:
                self._wake.set()  # traits may be waiting: come back once they are due
                continue
            with self._cond:
                self._published = max(self._published, gen)
                self._cond.notify_all()
            if stopping:
                return

    def _due_now(self) -> bool:
        """Whether a round must go without waiting for ``delta_interval``: a flush is
        waiting, or the changes are urgent."""
        with self._cond:
            if self._flushing > 0:
                return True
        return self._urgent is not None and self._urgent()

    def _pause(self) -> None:
        """Wait out ``delta_interval`` since the last round, unless close, a flush or an
        urgent change comes meanwhile (each poke wakes the wait to check)."""
        while not self._stopping.is_set():
            left = self._last_round + self._delta_interval - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            self._wake.wait(left)
            if self._stopping.is_set() or self._due_now():
                return

    def _round(self, *, force: bool) -> bool:
        """Send what is due; returns True when trait changes had to wait for their turn."""
        now = time.monotonic()
        traits_due = (
            force
            or now - self._last_traits >= self._trait_interval
            or (self._urgent is not None and self._urgent())
        )
        with self.lock:
            if traits_due:
                changes = self._take_changes()
                if changes:
                    values = dict(self._render(changes))
                    self.seq += 1
                    values["seq"] = self.seq
                    self._apply(values)
                    self.writes += 1
                    self._last_traits = now
            self._send_deltas()
        self._last_round = now
        return not traits_due

    def send_deltas_now(self) -> bool:
        """Send the streamed text waiting, on the calling thread (a reply thread: waking
        this one mid-generation makes the two take turns with the interpreter, which costs
        the reply more than sending does). False, and nothing sent, when the last such send
        is less than ``delta_interval`` old (text arriving token by token still goes out
        in chunks), while trait changes wait to go first (``changes_waiting``), or once the
        thread is stopping: poke instead."""
        if self._stopping.is_set() or not self._thread.is_alive():
            return False
        now = time.monotonic()
        # a little under the interval: a streamer that emits every interval is not refused
        if now - self._last_sent_now < self._delta_interval * 0.8:
            return False
        with self.lock:
            if self._changes_waiting is not None and self._changes_waiting():
                return False
            self._send_deltas()
            self._last_sent_now = now
        return True

    def _send_deltas(self) -> None:
        """Send the streamed text collected, one numbered delta per message (caller holds
        ``lock``)."""
        for delta in self._take_deltas():
            self.seq += 1
            self._send(
                {
                    "kind": "delta",
                    "seq": self.seq,
                    "conversation_id": delta.conversation_id,
                    "message_id": delta.message_id,
                    "index": delta.index,
                    "text": delta.text,
                }
            )
            self.deltas_sent += 1
