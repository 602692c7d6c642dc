"""The one background thread that runs queued jobs, one at a time, and timed housekeeping."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("chatwidget.orchestrator.worker")

#: The longest the loop sleeps without looking at the deadline again (clock changes, drift).
_MAX_SLEEP_S = 30.0
#: How soon a deadline that was handled but is still due is handled again.
_RETRY_S = 1.0


class Worker:
    """Calls ``run_next`` whenever ``has_work`` says so, until stopped.

    ``condition`` is the orchestrator's state condition: whoever adds work (or changes a
    deadline) notifies it. When idle, the loop sleeps until ``next_deadline()`` (a time on
    ``clock``, or None for no deadline) and then calls ``on_deadline`` (e.g. unload models
    idle for longer than ``keep_alive``). ``run_next`` and ``on_deadline`` must not raise
    (the orchestrator contains every failure); if they do anyway, the error is logged and
    the loop goes on.
    """

    def __init__(
        self,
        condition: threading.Condition,
        has_work: Callable[[], bool],
        run_next: Callable[[], bool],
        *,
        next_deadline: Callable[[], float | None] = lambda: None,
        on_deadline: Callable[[], object] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "chatwidget-orchestrator",
    ) -> None:
        self._condition = condition
        self._has_work = has_work
        self._run_next = run_next
        self._next_deadline = next_deadline
        self._on_deadline = on_deadline
        self._clock = clock
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def stop(self, timeout: float) -> bool:
        """Ask the loop to end and wait up to ``timeout`` s; True if the thread ended."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        fired: float | None = None  # the deadline handled last
        while True:
            with self._condition:
                due = False
                while not self._stopping and not self._has_work():
                    deadline = self._next_deadline()
                    if deadline is None:
                        self._condition.wait()
                        continue
                    if fired is not None and deadline <= fired:
                        # handled already and still due (e.g. a reply holds that model):
                        # look again in a while rather than spin
                        deadline = fired + _RETRY_S
                    left = deadline - self._clock()
                    if left <= 0:
                        due, fired = True, deadline
                        break
                    self._condition.wait(min(left, _MAX_SLEEP_S))
                if self._stopping:
                    return
            try:
                if due:
                    self._on_deadline()
                else:
                    self._run_next()
            except Exception:
                logger.exception("orchestrator worker step raised; going on with the queue")
