"""The one background thread that runs queued jobs, one at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("chatwidget.orchestrator.worker")


class Worker:
    """Calls ``run_next`` whenever ``has_work`` says so, until stopped.

    ``condition`` is the orchestrator's state condition: whoever adds work notifies it.
    ``run_next`` must not raise (the orchestrator contains every failure); if it does
    anyway, the error is logged and the loop goes on.
    """

    def __init__(
        self,
        condition: threading.Condition,
        has_work: Callable[[], bool],
        run_next: Callable[[], bool],
        *,
        name: str = "chatwidget-orchestrator",
    ) -> None:
        self._condition = condition
        self._has_work = has_work
        self._run_next = run_next
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
        while True:
            with self._condition:
                while not self._stopping and not self._has_work():
                    self._condition.wait()
                if self._stopping:
                    return
            try:
                self._run_next()
            except Exception:
                logger.exception("orchestrator worker step raised; going on with the queue")
