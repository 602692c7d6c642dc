"""The one thread that writes a widget's traits.

Everything that changes what the UI shows (user intents on the kernel's main thread,
orchestrator events on its worker, streamed text on a reply thread) only *pokes* the
publisher. The publisher renders the full view state, diffs it against what it last
sent, and writes the changed traits in one ``hold_sync`` batch, at most once per
``min_interval`` seconds. Progress and streaming are coalesced as a result, and no two
threads ever write the same trait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("chatwidget.widget.sync")

Render = Callable[[], Mapping[str, Any]]
Apply = Callable[[Mapping[str, Any]], None]


class TraitPublisher:
    """Coalesces state changes into trait writes on a single background thread."""

    def __init__(
        self,
        render: Render,
        apply: Apply,
        *,
        min_interval: float = 0.1,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "chatwidget-publisher",
    ) -> None:
        self._render = render
        self._apply = apply
        self._min_interval = min_interval
        self._on_error = on_error
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0  # poke generation
        self._published = 0  # last generation fully published
        self._last: dict[str, Any] = {}
        self._last_write = 0.0
        self.writes = 0  # number of batches written (for benchmarks and tests)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def poke(self) -> int:
        """Ask for a publish soon; returns the generation number to :meth:`flush` on."""
        with self._cond:
            self._requested += 1
            gen = self._requested
        self._wake.set()
        return gen

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything poked so far is published. True on success."""
        gen = self.poke()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._published < gen:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

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
            stopping = self._stopping.is_set()
            # Rate limit: wait out the rest of the interval, but never past a stop request.
            wait = self._last_write + self._min_interval - time.monotonic()
            if wait > 0 and not stopping:
                self._stopping.wait(wait)
            self._wake.clear()
            with self._cond:
                gen = self._requested
            try:
                self._publish()
            except Exception as exc:
                log.exception("Publishing widget state failed")
                if self._on_error is not None:
                    try:
                        self._on_error(exc)
                    except Exception:
                        log.exception("The publisher's error handler failed")
            with self._cond:
                self._published = max(self._published, gen)
                self._cond.notify_all()
            if self._stopping.is_set():
                return

    def _publish(self) -> None:
        state = dict(self._render())
        changed = {k: v for k, v in state.items() if k not in self._last or self._last[k] != v}
        if changed:
            self._apply(changed)
            self._last.update(changed)
            self.writes += 1
        self._last_write = time.monotonic()
