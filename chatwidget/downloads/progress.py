"""Byte counters → throttled :class:`DownloadProgress` updates with a smoothed speed and an ETA."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from chatwidget.downloads.types import DownloadProgress


class ProgressTracker:
    """Aggregates per-file byte counts for one repo and emits throttled progress updates.

    ``update`` may be called as often as counters change; ``on_progress`` is called at most
    once per ``interval_s`` (so ~10 updates/s by default), and ``finish`` always emits a final
    update. Totals never go backwards: a retried file that restarts from zero does not make the
    reported ``bytes_done`` shrink.
    """

    def __init__(
        self,
        repo_id: str,
        file_sizes: Mapping[str, int],
        on_progress: Callable[[DownloadProgress], None],
        *,
        interval_s: float = 0.1,
        already_done: Mapping[str, int] | None = None,
        smoothing_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repo_id = repo_id
        self._sizes = dict(file_sizes)
        self._done: dict[str, int] = dict.fromkeys(self._sizes, 0)
        for path, size in (already_done or {}).items():
            self._done[path] = min(size, self._sizes.get(path, size))
        self._finished: set[str] = {
            path for path, size in self._sizes.items() if self._done[path] >= size
        }
        self._emit = on_progress
        self._interval = interval_s
        self._smoothing = smoothing_s
        self._clock = clock
        self._current = ""
        self._note = ""
        self._note_files: set[str] = set()
        self._speed = 0.0
        self._last_emit: float | None = None
        self._last_sample_time = clock()
        self._last_sample_bytes = self.bytes_done
        self._reported_bytes = self.bytes_done
        self._last_activity = self._last_sample_time

    @property
    def bytes_total(self) -> int:
        return sum(self._sizes.values())

    @property
    def bytes_done(self) -> int:
        return sum(self._done.values())

    @property
    def last_activity(self) -> float:
        """Clock time at which bytes last arrived (or the tracker was made / re-armed)."""
        return self._last_activity

    def touch(self) -> None:
        """Re-arm the stall timer without counting bytes (e.g. the child just started)."""
        self._last_activity = self._clock()

    def set_note(self, note: str, files: Iterable[str] = ()) -> None:
        """Show ``note`` (e.g. waiting for another process) from the next update on; a change
        is sent at once. Bytes arriving for one of ``files`` (for any file, if none are
        named) clear it: other files progressing do not end a wait."""
        self._note_files = set(files)
        if note != self._note:
            self._note = note
            now = self._clock()
            self._send(now, final=False)

    def update(self, file_bytes: Mapping[str, int], *, current: str = "") -> None:
        """Record the latest byte counts of some files; emit if the interval has passed."""
        advanced = False
        for path, reported in file_bytes.items():
            size = self._sizes.get(path)
            if size is None:
                continue
            count = min(reported, size)
            if count > self._done[path]:
                self._done[path] = count
                advanced = True
                self._note_files.discard(path)
            if count >= size:
                self._finished.add(path)
        if current:
            self._current = current
        now = self._clock()
        if advanced:
            self._last_activity = now
            if not self._note_files:
                self._note = ""
        self._resample(now)
        if self._last_emit is None or now - self._last_emit >= self._interval:
            self._send(now, final=False)

    def mark_done(self, path: str) -> None:
        """A file finished (downloaded and verified, or found in the cache)."""
        if path in self._sizes:
            self._done[path] = self._sizes[path]
            self._finished.add(path)
            self._last_activity = self._clock()
            if path in self._note_files:
                self._note_files.discard(path)
                if not self._note_files:
                    self._note = ""

    def finish(self) -> DownloadProgress:
        """Emit and return the final update (always sent, whatever the throttle says)."""
        now = self._clock()
        self._resample(now)
        return self._send(now, final=True)

    def _resample(self, now: float) -> None:
        elapsed = now - self._last_sample_time
        if elapsed < 0.05:
            return
        instant = (self.bytes_done - self._last_sample_bytes) / elapsed
        # Exponential moving average with a time constant of ``smoothing_s``.
        weight = min(1.0, elapsed / self._smoothing)
        self._speed = (
            instant if self._speed == 0.0 else self._speed + weight * (instant - self._speed)
        )
        self._last_sample_time = now
        self._last_sample_bytes = self.bytes_done

    def _send(self, now: float, *, final: bool) -> DownloadProgress:
        done = max(self.bytes_done, self._reported_bytes)
        self._reported_bytes = done
        total = self.bytes_total
        remaining = max(total - done, 0)
        if remaining == 0:
            eta: float | None = 0.0
        elif self._speed > 0:
            eta = remaining / self._speed
        else:
            eta = None
        current = self._current
        progress = DownloadProgress(
            repo_id=self._repo_id,
            bytes_done=done,
            bytes_total=total,
            file=current,
            file_bytes_done=self._done.get(current, 0),
            file_bytes_total=self._sizes.get(current, 0),
            files_done=len(self._finished),
            files_total=len(self._sizes),
            speed_bps=max(self._speed, 0.0),
            eta_s=eta,
            final=final,
            note="" if final else self._note,
        )
        self._last_emit = now
        self._emit(progress)
        return progress
