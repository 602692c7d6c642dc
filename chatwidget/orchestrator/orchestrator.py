"""The orchestrator: per-conversation intent, one serialized queue, the stale-completion guard.

Public methods are called from the kernel's main thread and never block on the queue;
one background worker thread downloads and loads, one model at a time, first in first
out. All state lives behind one lock, which is never held while calling the downloader
or the engine. Events are numbered under that lock and delivered after it is released,
in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from chatwidget.catalog import ModelSpec
from chatwidget.downloads.types import DownloadProgress
from chatwidget.engine.types import GenerationResult, GenerationSettings
from chatwidget.errors import (
    DiskFullError,
    DownloadCanceledError,
    LoadCanceledError,
    ModelTooLargeError,
    NoActiveModelError,
    OrchestratorClosedError,
    UnknownModelError,
)
from chatwidget.failure import Failure, failure_of
from chatwidget.format import format_bytes
from chatwidget.orchestrator.events import (
    ErrorReported,
    Event,
    EventBus,
    Evicted,
    ProgressChanged,
    StateChanged,
    Switched,
)
from chatwidget.orchestrator.intent import Conversation, IntentBook
from chatwidget.orchestrator.lifecycle import (
    IN_FLIGHT,
    RETRYABLE,
    ModelState,
    check_transition,
)
from chatwidget.orchestrator.ports import DownloaderPort, EnginePort, Message
from chatwidget.orchestrator.queue import Job, WorkQueue
from chatwidget.orchestrator.snapshot import ConversationStatus, ModelStatus, OrchestratorSnapshot
from chatwidget.orchestrator.worker import Worker

logger = logging.getLogger("chatwidget.orchestrator")

#: How long close() waits for the worker thread.
CLOSE_TIMEOUT_S = 2.0
#: States in which a model's spec is in use and is not replaced by a new registration.
_BUSY_OR_LOADED = IN_FLIGHT | {ModelState.READY}


@dataclass
class _Model:
    spec: ModelSpec
    state: ModelState
    progress: DownloadProgress | None = None
    error: str | None = None
    failure: Failure | None = None
    history: list[str] = field(default_factory=list)
    cold_swap: bool = False
    job: Job | None = None  # the latest job; in flight when state is in IN_FLIGHT

    def status(self) -> ModelStatus:
        return ModelStatus(
            state=self.state,
            progress=self.progress,
            error=self.error,
            failure=self.failure,
            history=tuple(self.history),
            cold_swap=self.cold_swap,
        )


class Orchestrator:
    """Turns user intents into downloads and loads, and switches models only when wanted.

    ``downloader`` and ``engine`` are the boundaries it drives (see
    :mod:`chatwidget.orchestrator.ports`). With ``start=False`` no thread runs and a
    test drives the queue with :meth:`step`.
    """

    def __init__(
        self, downloader: DownloaderPort, engine: EnginePort, *, start: bool = True
    ) -> None:
        self._downloader = downloader
        self._engine = engine
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._bus = EventBus(self._lock)
        self._models: dict[str, _Model] = {}
        self._intent = IntentBook()
        self._queue = WorkQueue()
        self._working: Job | None = None
        self._closed = False
        engine.on_evict(self._on_evict)
        self._worker: Worker | None = None
        if start:
            self._worker = Worker(self._changed, lambda: len(self._queue) > 0, self._run_next)
            self._worker.start()

    # --- models ---------------------------------------------------------------------

    def register(self, spec: ModelSpec) -> None:
        """Add ``spec`` to the known models; its state comes from the cache and the engine.

        Registering a known model again replaces its spec while it is at rest.
        """
        loaded = self._engine.is_loaded(spec.repo_id)
        cached = loaded or self._is_downloaded(spec)
        with self._changing():
            self._check_open()
            known = self._models.get(spec.repo_id)
            if known is not None:
                if known.state not in _BUSY_OR_LOADED:
                    known.spec = spec
                return
            if loaded:
                state = ModelState.READY
            else:
                state = ModelState.DOWNLOADED if cached else ModelState.NOT_DOWNLOADED
            self._models[spec.repo_id] = _Model(spec=spec, state=state)

    def spec(self, repo_id: str) -> ModelSpec:
        """The registered spec of ``repo_id``."""
        with self._lock:
            return self._model(repo_id).spec

    def state(self, repo_id: str) -> ModelState:
        """The lifecycle state of ``repo_id``."""
        with self._lock:
            return self._model(repo_id).state

    def request_model(self, conversation_id: str, model: ModelSpec | str) -> ModelState:
        """Make ``model`` the conversation's target; never blocks. Returns its state.

        A Ready model becomes active at once. Any other model is queued, unless it is
        already on its way, in which case only the intent changes.
        """
        spec = ModelSpec.coerce(model)
        with self._lock:
            self._intent.get(conversation_id)  # fail early, before touching the cache
            known = spec.repo_id in self._models
        if not known:
            self.register(spec)
        with self._changing():
            self._check_open()
            conversation = self._intent.get(conversation_id)
            entry = self._models[spec.repo_id]
            if isinstance(model, ModelSpec) and entry.state not in _BUSY_OR_LOADED:
                entry.spec = model  # a new spec (e.g. another revision) applies from the next job
            conversation.target = spec.repo_id
            if entry.state is ModelState.READY:
                conversation.active = spec.repo_id
                self._announce(conversation)
            elif entry.state not in IN_FLIGHT:
                self._enqueue(entry)
            return entry.state

    def cancel(self, repo_id: str) -> None:
        """Cancel ``repo_id`` if it is Queued, Downloading or Compiling; else do nothing.

        Conversations waiting for it keep their active model, which is their target again.
        """
        with self._changing():
            entry = self._model(repo_id)
            if entry.state not in IN_FLIGHT:
                logger.debug("cancel(%s) ignored: it is %s", repo_id, entry.state.label)
                return
            self._cancel_job(entry)

    def retry(self, repo_id: str) -> None:
        """Queue a Failed or Canceled model again, at the back; else do nothing."""
        with self._changing():
            self._check_open()
            entry = self._model(repo_id)
            if entry.state not in RETRYABLE:
                logger.debug("retry(%s) ignored: it is %s", repo_id, entry.state.label)
                return
            self._enqueue(entry)

    # --- conversations ------------------------------------------------------------------

    def open_conversation(
        self, conversation_id: str, *, group: str = "default", model: str | None = None
    ) -> None:
        """Open a conversation in ``group`` (the first of a group is on screen).

        ``model``, if given, is requested for it at once.
        """
        with self._changing():
            self._check_open()
            self._intent.open(conversation_id, group)
        if model is not None:
            self.request_model(conversation_id, model)

    def close_conversation(self, conversation_id: str) -> None:
        """Forget a conversation; models it used stay as they are."""
        with self._changing():
            self._intent.close(conversation_id)

    def set_active_conversation(self, conversation_id: str, *, group: str = "default") -> None:
        """Put ``conversation_id`` on screen in ``group``.

        If its target became Ready while it was off screen, it is announced (Switched) now.
        """
        with self._changing():
            conversation = self._intent.set_active(conversation_id, group)
            self._announce(conversation)

    def active_conversation(self, group: str = "default") -> str | None:
        """The on-screen conversation of ``group``."""
        with self._lock:
            return self._intent.active_conversation(group)

    def active_model(self, conversation_id: str) -> str | None:
        """The model the conversation chats with now (always Ready), if any."""
        with self._lock:
            return self._intent.get(conversation_id).active

    def requested_model(self, conversation_id: str) -> str | None:
        """The latest model asked for there; equals the active model when nothing is pending."""
        with self._lock:
            return self._intent.get(conversation_id).target

    # --- chat ---------------------------------------------------------------------------

    def generate(
        self,
        conversation_id: str,
        messages: Sequence[Message],
        settings: GenerationSettings,
        *,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerationResult:
        """Reply on the conversation's active model, in the caller's thread.

        It takes the state lock only to read the active model, so it never waits
        behind a download or a load.
        """
        with self._lock:
            repo_id = self._intent.get(conversation_id).active
        if repo_id is None:
            raise NoActiveModelError(
                f"Conversation {conversation_id!r} has no active model yet: pick a model "
                "and wait until it is Ready."
            )
        return self._engine.generate(repo_id, messages, settings, on_text=on_text, stop=stop)

    # --- observation ----------------------------------------------------------------------

    def snapshot(self) -> OrchestratorSnapshot:
        """An immutable picture of every model, conversation and the queue."""
        with self._lock:
            return OrchestratorSnapshot(
                models=MappingProxyType({k: m.status() for k, m in self._models.items()}),
                conversations=MappingProxyType(
                    {
                        c.conversation_id: ConversationStatus(c.group, c.active, c.target)
                        for c in self._intent.all()
                    }
                ),
                active=MappingProxyType(self._intent.groups()),
                queue=self._queue.order(),
                working=self._working.repo_id if self._working is not None else None,
                seq=self._bus.last_seq,
            )

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Receive every later event, in ``seq`` order; returns the unsubscribe function."""
        return self._bus.subscribe(callback)

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty, nothing is worked on and every event is delivered.

        Returns False on timeout. Do not call it from a subscriber (its own delivery is
        still under way, so it would wait until the timeout).
        """
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self._queue) == 0 and self._working is None and self._bus.idle,
                timeout,
            )

    def step(self) -> bool:
        """Run the next queued job in this thread (``start=False`` only); False if none."""
        if self._worker is not None:
            raise RuntimeError(
                "step() drives an orchestrator created with start=False; "
                "this one has a worker thread."
            )
        return self._run_next()

    def close(self) -> None:
        """Cancel all work, stop the worker within 2 s, and refuse new work. Idempotent."""
        with self._changing():
            already = self._closed
            self._closed = True
            if not already:
                for job in self._queue.drain():
                    job.canceled = True
                    self._cancel_job(self._models[job.repo_id])
                if self._working is not None:
                    entry = self._models[self._working.repo_id]
                    if entry.job is self._working and entry.state in IN_FLIGHT:
                        self._cancel_job(entry)
                    self._working.canceled = True
                    self._working.cancel.set()
        if self._worker is not None and not self._worker.stop(CLOSE_TIMEOUT_S):
            logger.warning(
                "the orchestrator worker did not stop within %.1f s (a load is still running); "
                "it is a daemon thread and ends with that load",
                CLOSE_TIMEOUT_S,
            )

    # --- the worker's side --------------------------------------------------------------

    def _run_next(self) -> bool:
        with self._changing():
            job = self._queue.pop()
            if job is None:
                return False
            self._working = job
        try:
            self._run(job)
        except Exception as exc:  # a bug in chatwidget: keep the queue going
            logger.exception("orchestrator job for %s raised", job.repo_id)
            self._settle_failure(job, exc, source="worker")
        finally:
            with self._changing():
                self._working = None
        return True

    def _run(self, job: Job) -> None:
        spec = job.spec
        if not self._is_downloaded(spec):
            with self._changing():
                if job.canceled:
                    return
                self._move(self._models[spec.repo_id], ModelState.DOWNLOADING)
            try:
                self._check_fits_before_download(spec)
                self._downloader.download(
                    spec, on_progress=lambda p: self._on_progress(job, p), cancel=job.cancel
                )
            except Exception as exc:
                self._settle_failure(job, exc, source="download")
                return
        with self._lock:
            if job.canceled:
                return
            wanting = self._intent.wanting(spec.repo_id)
            stale = not wanting
            keep = self._intent.active_models(
                excluding=frozenset(c.conversation_id for c in wanting)
            )
        if stale and not self._fits_beside(spec, keep):
            with self._changing():
                if not job.canceled:
                    self._move(self._models[spec.repo_id], ModelState.DOWNLOADED)
            return
        with self._changing():
            if job.canceled:
                return
            # a remote model is not compiled: its load is one request that proves it answers
            loading = ModelState.CONNECTING if spec.is_remote else ModelState.COMPILING
            self._move(self._models[spec.repo_id], loading)
        try:
            report = self._engine.load(spec, keep=keep)
        except Exception as exc:
            self._settle_failure(job, exc, source="load")
            return
        with self._changing():
            if not job.canceled:
                entry = self._models[spec.repo_id]
                self._move(entry, ModelState.READY, cold_swap=report.cold_swap)
                for conversation in self._intent.activate(spec.repo_id):
                    self._announce(conversation)
                return
        logger.info("%s was canceled while compiling; unloading it", spec.repo_id)
        self._engine.unload(spec.repo_id)

    def _check_fits_before_download(self, spec: ModelSpec) -> None:
        """Refuse, before the first byte, a model that cannot fit on disk or in memory.

        The hub's listing gives the bytes to fetch and the memory the weights will take; the
        engine judges the memory with nothing protected (everything evictable counts as free).
        """
        plan = self._downloader.plan(spec)
        if not plan.fits_on_disk:
            raise DiskFullError(
                f"{spec.repo_id} needs {format_bytes(plan.missing_bytes)} of disk, but only "
                f"{format_bytes(plan.disk_free_bytes)} is free for the Hugging Face cache. "
                "Free some space (e.g. delete models you no longer use), then retry."
            )
        fit = self._engine.check_fit(replace(spec, size_bytes=plan.memory_estimate_bytes))
        if not fit.fits:
            raise ModelTooLargeError(
                fit.message
                or f"{spec.repo_id} needs about {format_bytes(fit.required_bytes)} of memory "
                f"but at most {format_bytes(fit.available_bytes)} can be made free: "
                "pick a smaller model."
            )

    def _fits_beside(self, spec: ModelSpec, keep: Sequence[str]) -> bool:
        """Whether a model nobody waits for fits without pushing out any active model."""
        try:
            return self._engine.check_fit(spec, keep=keep).fits
        except Exception:
            logger.exception("fit check of %s failed; leaving it Downloaded", spec.repo_id)
            return False

    def _settle_failure(self, job: Job, exc: Exception, *, source: str) -> None:
        with self._changing():
            entry = self._models[job.repo_id]
            if job.canceled or entry.job is not job or entry.state not in IN_FLIGHT:
                return  # canceled meanwhile: the state already says so
            if isinstance(exc, DownloadCanceledError | LoadCanceledError):
                self._cancel_job(entry)
                return
            failure = failure_of(exc)
            message = failure.message
            logger.warning("%s of %s failed: %s", source, job.repo_id, message)
            self._move(entry, ModelState.FAILED, failure=failure)
            self._bus.publish(
                ErrorReported(
                    seq=self._bus.next_seq(), source=source, repo_id=job.repo_id, message=message
                )
            )

    def _on_progress(self, job: Job, progress: DownloadProgress) -> None:
        with self._changing():
            entry = self._models[job.repo_id]
            if job.canceled or entry.job is not job or entry.state is not ModelState.DOWNLOADING:
                return
            entry.progress = progress
            self._bus.publish(
                ProgressChanged(seq=self._bus.next_seq(), repo_id=job.repo_id, progress=progress)
            )

    def _on_evict(self, repo_id: str) -> None:
        with self._changing():
            entry = self._models.get(repo_id)
            if entry is None or entry.state is not ModelState.READY:
                return
            self._move(entry, ModelState.DOWNLOADED)
            self._bus.publish(Evicted(seq=self._bus.next_seq(), repo_id=repo_id))
            self._intent.drop_model(repo_id)

    # --- helpers (call with the lock held) -------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the state lock, then deliver the events published meanwhile, then wake waiters."""
        try:
            with self._changed:
                yield
        finally:
            self._bus.deliver()
            with self._changed:
                self._changed.notify_all()

    def _model(self, repo_id: str) -> _Model:
        try:
            return self._models[repo_id]
        except KeyError:
            raise UnknownModelError(
                f"No model {repo_id!r} is known; register it or request it first."
            ) from None

    def _check_open(self) -> None:
        if self._closed:
            raise OrchestratorClosedError(
                "This orchestrator is closed; create a new one (a new widget) to go on."
            )

    def _is_downloaded(self, spec: ModelSpec) -> bool:
        try:
            return self._downloader.is_downloaded(spec)
        except Exception:
            logger.exception(
                "cache check of %s failed; treating it as not downloaded", spec.repo_id
            )
            return False

    def _enqueue(self, entry: _Model) -> None:
        job = Job(entry.spec)
        entry.job = job
        self._move(entry, ModelState.QUEUED)
        self._queue.push(job)

    def _cancel_job(self, entry: _Model) -> None:
        job = entry.job
        if job is not None:
            self._queue.remove(job)
            job.canceled = True
            job.cancel.set()
        self._move(entry, ModelState.CANCELED)
        self._intent.withdraw_target(entry.spec.repo_id)

    def _move(
        self,
        entry: _Model,
        new: ModelState,
        *,
        failure: Failure | None = None,
        cold_swap: bool = False,
    ) -> None:
        old = entry.state
        check_transition(entry.spec.repo_id, old, new)
        entry.state = new
        if new is ModelState.QUEUED:
            entry.error = None
            entry.failure = None
            entry.progress = None
            entry.cold_swap = False
        error = failure.message if failure is not None else None
        if failure is not None:
            entry.error = failure.message
            entry.failure = failure
            entry.history.append(failure.message)
        if new is ModelState.READY:
            entry.cold_swap = cold_swap
        self._bus.publish(
            StateChanged(
                seq=self._bus.next_seq(),
                repo_id=entry.spec.repo_id,
                old=old,
                new=new,
                error=error,
                failure=failure,
                cold_swap=cold_swap,
            )
        )

    def _announce(self, conversation: Conversation) -> None:
        repo_id = self._intent.owed_announcement(conversation)
        if repo_id is None:
            return
        conversation.announced = repo_id
        self._bus.publish(
            Switched(
                seq=self._bus.next_seq(),
                conversation_id=conversation.conversation_id,
                repo_id=repo_id,
            )
        )
