"""The FIFO of pending work and the job record of one pass through the lifecycle."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from chatwidget.catalog import ModelSpec


@dataclass(eq=False)
class Job:
    """One pass of one model through Queued -> ... -> Ready/Failed/Canceled.

    A retry makes a new job, so a result that comes back for an older, canceled job is
    recognised (``job is not current``) and dropped.
    """

    spec: ModelSpec
    group: str | None = None  # whose request queued it: that group's token downloads it
    wake: bool = False  # it loads again a model conversations chat with (asleep models)
    cancel: threading.Event = field(default_factory=threading.Event)
    canceled: bool = False
    evicted: list[str] = field(default_factory=list)  # models its load unloaded to make room

    @property
    def repo_id(self) -> str:
        return self.spec.repo_id


class WorkQueue:
    """First in, first out; a job can leave from the middle when it is canceled."""

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()

    def push(self, job: Job) -> None:
        """Add ``job`` at the back."""
        self._jobs.append(job)

    def push_front(self, job: Job) -> None:
        """Add ``job`` at the front (a reply waits for it), or move it there if queued."""
        self.remove(job)
        self._jobs.appendleft(job)

    def pop(self) -> Job | None:
        """Take the job at the front, or None when empty."""
        return self._jobs.popleft() if self._jobs else None

    def remove(self, job: Job) -> bool:
        """Take ``job`` out wherever it is; False if it was not queued."""
        try:
            self._jobs.remove(job)
        except ValueError:
            return False
        return True

    def order(self) -> tuple[str, ...]:
        """Repo ids waiting, front first."""
        return tuple(job.repo_id for job in self._jobs)

    def drain(self) -> list[Job]:
        """Take every waiting job out, front first."""
        jobs = list(self._jobs)
        self._jobs.clear()
        return jobs

    def __len__(self) -> int:
        return len(self._jobs)
