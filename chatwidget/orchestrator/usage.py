"""Which models replies are using, and when each was last used (for ``keep_alive``).

Pure bookkeeping with no locking and no I/O; the orchestrator calls it under its state lock
with times from its own clock (injectable, so tests step time).
"""

from __future__ import annotations

from collections.abc import Iterable


class UsageBook:
    """Replies in flight per model, and the time each model was last used."""

    def __init__(self) -> None:
        self._replies: dict[str, int] = {}
        self._last_used: dict[str, float] = {}

    def begin(self, repo_id: str, now: float) -> None:
        """A reply starts (or waits to start) on ``repo_id``."""
        self._replies[repo_id] = self._replies.get(repo_id, 0) + 1
        self._last_used[repo_id] = now

    def end(self, repo_id: str, now: float) -> None:
        """A reply on ``repo_id`` ended (finished, stopped or failed)."""
        left = self._replies.get(repo_id, 0) - 1
        if left > 0:
            self._replies[repo_id] = left
        else:
            self._replies.pop(repo_id, None)
        self._last_used[repo_id] = now

    def touch(self, repo_id: str, now: float) -> None:
        """``repo_id`` was used now (e.g. it just became Ready)."""
        self._last_used[repo_id] = now

    def forget(self, repo_id: str) -> None:
        """``repo_id`` is not loaded any more: no idle timer runs for it."""
        self._last_used.pop(repo_id, None)

    def in_use(self, repo_id: str) -> bool:
        return self._replies.get(repo_id, 0) > 0

    def busy(self) -> frozenset[str]:
        """Models with a reply in flight or waiting to start."""
        return frozenset(self._replies)

    def last_used(self, repo_id: str) -> float | None:
        return self._last_used.get(repo_id)

    def idle(self, loaded: Iterable[str], now: float, keep_alive_s: float) -> list[str]:
        """Loaded models unused for at least ``keep_alive_s``, longest idle first."""
        expired = [
            (t, r)
            for r in loaded
            if not self.in_use(r)
            and (t := self._last_used.get(r)) is not None
            and now - t >= keep_alive_s
        ]
        return [r for _t, r in sorted(expired)]

    def next_expiry(self, loaded: Iterable[str], keep_alive_s: float) -> float | None:
        """The clock time at which the next loaded, unused model expires, if any."""
        times = [
            t + keep_alive_s
            for r in loaded
            if not self.in_use(r) and (t := self._last_used.get(r)) is not None
        ]
        return min(times, default=None)
