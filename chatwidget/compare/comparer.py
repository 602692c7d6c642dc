"""Compare mode for one session: start comparisons, keep the current one, save and vote.

Comparisons are saved in the conversation store (:class:`chatwidget.history.History`,
its ``comparisons`` table) when they end; votes are stored with them. Without a History
(``history=False``, or before the session has one) they are kept in an in-memory History
of the same shape, for this kernel's life.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from chatwidget.catalog import ModelSpec
from chatwidget.compare.handle import CompareHandle
from chatwidget.compare.run import CompareRun
from chatwidget.compare.types import MAX_MODELS, MIN_MODELS
from chatwidget.engine.types import GenerationSettings
from chatwidget.history import History
from chatwidget.history.types import Comparison, ComparisonResult
from chatwidget.history.types import Usage as StoredUsage
from chatwidget.session.deltas import DeltaStream

if TYPE_CHECKING:
    from chatwidget.runtime import Runtime

log = logging.getLogger("chatwidget.compare")


class Comparer:
    """Runs comparisons on a runtime for one group (a widget's), one at a time.

    ``settings()`` gives the generation settings to use; ``history()`` the session's store
    (None: an in-memory one). ``on_change`` is called (any thread) when the current
    comparison changes; its text streams through :attr:`deltas`, which calls ``on_text``
    when text starts collecting (once per chunk, not per token). ``on_queued(repo_id)`` is
    called when a model had to be queued (the widget shows it in the download manager).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        group: str,
        settings: Callable[[], GenerationSettings],
        history: Callable[[], History | None] = lambda: None,
        on_change: Callable[[], None] = lambda: None,
        on_text: Callable[[], None] = lambda: None,
        on_queued: Callable[[str], None] = lambda repo_id: None,
        shuffle: Callable[[list[ModelSpec]], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._group = group
        self._settings = settings
        self._history = history
        self._on_change = on_change
        self._on_queued = on_queued
        self._shuffle = shuffle or random.SystemRandom().shuffle
        self._lock = threading.Lock()
        self._memory: History | None = None
        self._current: CompareRun | None = None
        self._closed = False
        self.deltas = DeltaStream(on_text)

    @property
    def current(self) -> CompareRun | None:
        """The latest comparison (running or done), if any."""
        return self._current

    def compare(
        self, prompt: str, models: Iterable[ModelSpec | str], *, blind: bool = False
    ) -> CompareHandle:
        """Answer ``prompt`` with 2-3 models side by side; returns at once (see the handle).

        Blind mode shuffles the columns and hides the names until the vote."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("Type a prompt first: it cannot be empty.")
        specs = _specs(models)
        if blind:
            self._shuffle(specs)
        with self._lock:
            if self._closed:
                raise RuntimeError("This widget is closed: create a new one to compare.")
            current = self._current
            if current is not None and not current.done:
                raise RuntimeError(
                    "A comparison is still running: stop it (.stop()) or wait for it."
                )
            run = CompareRun(
                self._runtime,
                group=self._group,
                prompt=prompt,
                specs=specs,
                blind=blind,
                settings=self._settings(),
                deltas=self.deltas,
                on_change=self._on_change,
                on_done=self._save,
                on_queued=self._on_queued,
            )
            self._current = run
        run.start()
        self._on_change()
        return CompareHandle(run, self._vote)

    def handle(self) -> CompareHandle | None:
        """A handle on the current comparison."""
        run = self._current
        return None if run is None else CompareHandle(run, self._vote)

    def stop(self) -> None:
        run = self._current
        if run is not None:
            run.stop()

    def comparisons(self) -> list[Comparison]:
        """Saved comparisons of this workspace, oldest first."""
        return self.store().comparisons()

    def store(self) -> History:
        """Where comparisons are saved: the session's History, else one in memory."""
        history = self._history()
        if history is not None:
            return history
        with self._lock:
            if self._memory is None:
                self._memory = History.open(False)
            return self._memory

    def close(self) -> None:
        """Stop the current comparison and wait briefly for it. Idempotent."""
        with self._lock:
            self._closed = True
            run = self._current
        if run is not None:
            run.stop()
            run.join(5.0)
        if self._memory is not None:
            self._memory.close()

    # ------------------------------------------------------------------ internals

    def _save(self, run: CompareRun) -> None:
        results = [
            ComparisonResult(
                model=c.repo_id,
                text=c.text,
                status="error" if c.status == "failed" else c.status,  # type: ignore[arg-type]
                usage=None if c.usage is None else StoredUsage.of(c.usage),
                error=c.error,
            )
            for c in run.columns
        ]
        saved = self.store().save_comparison(run.prompt, results, blind=run.blind)
        with run.lock:
            run.comparison_id = saved.id
            run.version += 1

    def _vote(self, run: CompareRun, index: int) -> None:
        with run.lock:
            run.vote = index
            run.version += 1
        if run.comparison_id is not None:
            self.store().set_vote(run.comparison_id, run.columns[index].repo_id)
        self._on_change()


def _specs(models: Iterable[ModelSpec | str]) -> list[ModelSpec]:
    if isinstance(models, str | ModelSpec):
        raise TypeError("models= takes a list of 2 or 3 models, e.g. models=['a/b', 'c/d'].")
    specs = [ModelSpec.coerce(m) for m in models]
    ids = [s.repo_id for s in specs]
    if not MIN_MODELS <= len(specs) <= MAX_MODELS:
        raise ValueError(f"Compare {MIN_MODELS} or {MAX_MODELS} models, not {len(specs)}.")
    if len(set(ids)) != len(ids):
        raise ValueError(f"Pick different models to compare, not {ids}.")
    return specs


def check_models(models: Sequence[str]) -> list[ModelSpec]:
    """The specs of ``models`` (2-3 distinct ids), or a ValueError that says what to pick."""
    return _specs(models)
