"""ThreadPool: daemon threads reused between jobs (the remote engine's stop watchers).

Starting a thread for every remote reply, to shut its socket down on Stop, cost the reply's
first token about 0.15 ms on two cores (the new thread's start-up runs while the server
computes that token). A thread here runs one job at a time and then waits for the next.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger("chatwidget.engine.remote")


class ThreadPool:
    """Daemon threads that run one job at a time and wait for the next: as many as jobs run
    at once. One idle for ``idle_s`` ends, and :meth:`close` ends them all (each as soon
    as its job is done)."""

    def __init__(self, name: str, idle_s: float = 30.0) -> None:
        self._name = name
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Callable[[], None] | None]] = []
        self._closed = False

    def run(self, job: Callable[[], None]) -> None:
        """Run ``job`` on an idle thread, or on a new one."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            thread = threading.Thread(target=self._serve, args=(inbox,), name=self._name)
            thread.daemon = True
            thread.start()
        inbox.put(job)

    def close(self) -> None:
        """End the idle threads now and the busy ones after their job. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        while True:
            try:
                job = inbox.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody handed it a job meanwhile: end
                        self._idle.remove(inbox)
                        return
                continue  # it was handed one just now: take it
            if job is None:
                return
            try:
                job()
            except Exception:  # a job reports its own errors; this is a bug
                logger.exception("A job of %s failed", self._name)
            with self._lock:
                if self._closed:
                    return
                self._idle.append(inbox)
