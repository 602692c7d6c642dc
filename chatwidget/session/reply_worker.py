"""The session's reply thread: one long-lived thread runs the replies, one after another.

A thread per reply would cost every turn a thread start, and the caller would wait for the
new thread's handshake before its call returns; handing a job to a thread that waits on a
queue costs neither. The thread starts with the first reply and stops on :meth:`close`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("chatwidget.session.reply_worker")


class ReplyWorker:
    """Runs submitted jobs in order on one daemon thread; knows when none is left."""

    def __init__(self, name: str = "chatwidget-reply") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = 0  # jobs submitted and not yet finished; under ``_lock``
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False

    def submit(self, job: Callable[[], None], *, hand_over: bool = False) -> None:
        """Run ``job`` after the jobs before it. Raises RuntimeError once closed.

        ``hand_over``: let the reply thread run at once (a remote reply's request), instead
        of when the caller next blocks (a local reply first waits for the publisher, and
        taking turns with the caller's own return path only delays both)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("This chat is closed: create a new widget to chat again.")
            self._pending += 1
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._jobs.put(job)
        if hand_over:
            # Hand the interpreter to the reply thread now: otherwise it waits for the
            # caller's next blocking call (or the 5 ms switch interval) before it can start,
            # and a remote reply's request would go out after the caller's bookkeeping.
            time.sleep(0)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has finished. True when none is left."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Let the jobs in hand finish (stop them first), then end the thread. Idempotent."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._jobs.put(None)
        if thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException:  # a job reports its own errors; this is a bug
                log.exception("A reply job failed")
            finally:
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()
