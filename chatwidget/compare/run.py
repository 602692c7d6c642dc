"""One comparison in flight: hidden conversations, the queue, and the replies side by side.

Each column chats in a conversation of its own, opened in the orchestrator for this
comparison only (never one of the user's), so requesting its model never changes a
conversation's active model. Its model goes through the normal queue and lifecycle; the
column shows that state until it is Ready. The replies run as the :mod:`schedule` says, on
one worker thread (sequential) or one per column (concurrent); streamed text goes through a
:class:`~chatwidget.session.deltas.DeltaStream` (O(1) per token).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatwidget.catalog import ModelSpec
from chatwidget.compare import memory
from chatwidget.compare.schedule import PROBES, decide
from chatwidget.compare.types import ColumnStatus, CompareResult, Schedule, column_label
from chatwidget.engine.types import GenerationSettings, Usage
from chatwidget.orchestrator import Event, ModelState
from chatwidget.orchestrator.lifecycle import IN_FLIGHT
from chatwidget.session.deltas import DeltaStream
from chatwidget.session.messages import new_id

if TYPE_CHECKING:
    from chatwidget.runtime import Runtime

log = logging.getLogger("chatwidget.compare")

#: How often a waiting column looks at the queue when no event woke it.
_POLL_S = 0.25
#: States in which a model will not become Ready by itself.
_DEAD = frozenset({ModelState.FAILED, ModelState.CANCELED})


@dataclass
class Column:
    """One model's column. Written by the run's threads under :attr:`CompareRun.lock`."""

    index: int
    spec: ModelSpec
    label: str
    conversation_id: str
    message_id: str
    state: str = ModelState.NOT_DOWNLOADED.value  # the model's lifecycle label
    note: str | None = None
    status: ColumnStatus = "waiting"
    text: str = ""
    usage: Usage | None = None
    error: str | None = None
    requested: bool = False

    @property
    def repo_id(self) -> str:
        return self.spec.repo_id

    @property
    def finished(self) -> bool:
        return self.status in ("done", "stopped", "failed")


class CompareRun:
    """A prompt answered by 2-3 models. Start it with :meth:`start`; ``on_change`` is called
    (any thread, no lock held) when a column's state changes; ``on_done`` once at the end;
    ``on_queued(repo_id)`` when a column's model had to be queued (not Ready)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        group: str,
        prompt: str,
        specs: Sequence[ModelSpec],
        blind: bool,
        settings: GenerationSettings,
        deltas: DeltaStream,
        on_change: Callable[[], None] = lambda: None,
        on_done: Callable[[CompareRun], None] = lambda run: None,
        on_queued: Callable[[str], None] = lambda repo_id: None,
    ) -> None:
        self.id = new_id("cmp")
        self.prompt = prompt
        self.blind = blind
        self.lock = threading.RLock()
        self.schedule: Schedule | None = None
        self.vote: int | None = None  # the winning column, once voted
        self.comparison_id: str | None = None  # its record in the store, once saved
        self.version = 0  # grows with every change (the view keeps the newest state)
        self.active_models_changed: dict[str, tuple[str | None, str | None]] = {}
        self._runtime = runtime
        self._orch = runtime.orchestrator
        self._group = group
        self._settings = settings
        self._deltas = deltas
        self._on_change = on_change
        self._on_done = on_done
        self._on_queued = on_queued
        self._stop = threading.Event()
        self._done = threading.Event()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.columns = [
            Column(i, spec, column_label(i), f"{self.id}-{i}", new_id("cm"))
            for i, spec in enumerate(specs)
        ]

    # ------------------------------------------------------------------ reading

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def deltas(self) -> DeltaStream:
        """Where the columns' text streams (message ids: ``Column.message_id``)."""
        return self._deltas

    @property
    def revealed(self) -> bool:
        """Whether model names may be shown (not blind, or voted)."""
        return not self.blind or self.vote is not None

    def results(self) -> list[CompareResult]:
        """One result per column, in the order shown (text so far while streaming)."""
        with self.lock:
            out = []
            for c in self.columns:
                text = c.text if c.finished else (self._deltas.text(c.message_id) or c.text)
                out.append(
                    CompareResult(
                        label=c.label,
                        model=c.repo_id if self.revealed else None,
                        text=text,
                        status=c.status,
                        usage=c.usage,
                        error=c.error,
                    )
                )
            return out

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # ------------------------------------------------------------------ acting

    def start(self) -> None:
        """Open the columns' conversations and start the worker (returns at once)."""
        self._before = self._user_models()
        for c in self.columns:
            self._orch.open_conversation(c.conversation_id, group=self._group)
            self._deltas.open(self.id, c.message_id)
        self._unsubscribe = self._orch.subscribe(self._on_event)
        self._refresh_states()
        self._thread = threading.Thread(target=self._run, name="chatwidget-compare", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop every reply (keeping what each wrote) and stop waiting for models."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        try:
            facts = memory.gather(self._runtime, [c.spec for c in self.columns], group=self._group)
            models = [c.repo_id for c in self.columns]
            schedule = decide(models, facts, PROBES.lookup(models))
            with self.lock:
                self.schedule = schedule
            self._changed()
            if schedule.fits_together:
                for c in self.columns:
                    self._request(c)
            if schedule.mode == "concurrent":
                threads = [
                    threading.Thread(target=self._column, args=(c,), name="chatwidget-compare-col")
                    for c in self.columns
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                for i, c in enumerate(self.columns):
                    nxt = self.columns[i + 1] if i + 1 < len(self.columns) else None
                    self._column(c, then=nxt)
        except Exception as exc:  # never leave the handle waiting forever
            log.exception("The comparison failed")
            with self.lock:
                for c in self.columns:
                    if not c.finished:
                        c.status, c.error = "failed", str(exc)
        finally:
            self._finish()

    def _column(self, c: Column, then: Column | None = None) -> None:
        """Wait for this column's model, then stream its reply. ``then`` (sequential runs of
        models that do not fit together) is requested once this reply starts, so its
        download overlaps and its load waits for this reply (the memory policy)."""
        if self._stop.is_set():  # stopped before this column's turn: do not queue its model
            with self.lock:
                c.status = "stopped"
            return
        self._request(c)
        if not self._wait_ready(c):
            return
        with self.lock:
            c.status = "streaming"
        self._changed()
        append = self._deltas.append
        mid = c.message_id
        first = [then]

        def on_text(piece: str) -> None:
            append(mid, piece)
            if first[0] is not None:
                nxt, first[0] = first[0], None
                if not self._stop.is_set():
                    self._request(nxt)

        messages = [{"role": "user", "content": self.prompt}]
        try:
            result = self._orch.generate(
                c.conversation_id, messages, self._settings, on_text=on_text, stop=self._stop
            )
        except Exception as exc:
            log.info("Compare column %s failed: %s", c.repo_id, exc)
            with self.lock:
                c.text = self._deltas.close(mid)
                c.status, c.error = "failed", str(exc)
        else:
            with self.lock:  # closing and setting the text at once: readers see one or other
                self._deltas.close(mid)
                c.text, c.usage = result.text, result.usage
                c.status = "stopped" if result.stopped else "done"
        if then is not None and not self._stop.is_set():
            self._request(then)
        self._changed()

    def _request(self, c: Column) -> None:
        with self.lock:
            if c.requested:
                return
            c.requested = True
        try:
            state = self._orch.request_model(c.conversation_id, c.spec)
        except Exception as exc:
            with self.lock:
                c.status, c.error = "failed", str(exc)
        else:
            if state is not ModelState.READY:
                self._on_queued(c.repo_id)  # the download manager shows it too
        self._refresh_states()

    def _wait_ready(self, c: Column) -> bool:
        """Wait until the column's conversation has its model (Ready, or asleep: generate
        loads it again); False when it failed, was canceled, or the run was stopped."""
        while True:
            if c.status == "failed":
                return False
            if self._stop.is_set():
                with self.lock:
                    c.status = "stopped"
                return False
            snapshot = self._orch.snapshot()
            conversation = snapshot.conversations.get(c.conversation_id)
            if conversation is not None and conversation.active_model == c.repo_id:
                return True
            status = snapshot.models.get(c.repo_id)
            if status is not None and status.state in _DEAD:
                with self.lock:
                    c.status = "failed"
                    c.error = status.error or f"{c.repo_id} was {status.state.value.lower()}."
                self._changed()
                return False
            with self._wake:
                self._wake.wait(_POLL_S)

    def _finish(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for c in self.columns:
            self._deltas.close(c.message_id)
            try:
                self._orch.close_conversation(c.conversation_id)
            except Exception:
                log.debug("Closing compare conversation %s failed", c.conversation_id)
        after = self._user_models()
        changed = {
            cid: (model, after[cid])
            for cid, model in self._before.items()
            if cid in after and after[cid] != model
        }
        if changed:  # the orchestrator's own switches (a requested model became Ready)
            log.info("Active models changed during a comparison: %s", changed)
        self.active_models_changed = changed
        try:
            self._on_done(self)
        except Exception:
            log.exception("Saving the comparison failed")
        self._done.set()
        self._changed()

    # ------------------------------------------------------------------ events

    def _user_models(self) -> dict[str, str | None]:
        """The active model of every conversation of this group that is not a column's."""
        ours = {c.conversation_id for c in self.columns}
        return {
            cid: status.active_model
            for cid, status in self._orch.snapshot().conversations.items()
            if status.group == self._group and cid not in ours
        }

    def _on_event(self, _event: Event) -> None:
        if self._refresh_states():
            self._changed()
        with self._wake:
            self._wake.notify_all()

    def _refresh_states(self) -> bool:
        """Copy each column's lifecycle state and note from the snapshot; True if changed."""
        snapshot = self._orch.snapshot()
        changed = False
        with self.lock:
            for c in self.columns:
                status = snapshot.models.get(c.repo_id)
                state = status.state.value if status else ModelState.NOT_DOWNLOADED.value
                note = status.note if status else None
                if status is not None and status.state in IN_FLIGHT and status.progress:
                    p = status.progress
                    if p.bytes_total and status.state is ModelState.DOWNLOADING:
                        note = note or f"{round(100 * p.bytes_done / p.bytes_total)}%"
                if (state, note) != (c.state, c.note):
                    c.state, c.note = state, note
                    changed = True
        return changed

    def _changed(self) -> None:
        with self.lock:
            self.version += 1
        try:
            self._on_change()
        except Exception:
            log.exception("A compare change listener failed")


def timed_out(run: CompareRun, timeout: float | None) -> TimeoutError:
    return TimeoutError(
        f"The comparison was not finished within {timeout} s "
        f"({sum(not c.finished for c in run.columns)} column(s) still running); "
        "call .wait() again, or .stop() it."
    )
