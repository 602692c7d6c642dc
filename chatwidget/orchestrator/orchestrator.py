"""The orchestrator: per-conversation intent, one serialized queue, the stale-completion guard.

Public methods are called from the kernel's main thread and never block on the queue;
one background worker thread downloads and loads, one model at a time, first in first
out (a model a waiting reply needs goes to the front). All state lives behind one lock,
which is never held while calling the downloader or the engine. Every decision taken
under the lock is taken again under the lock right before it is acted on, because the
lock is released around each call out (see ``_run`` and the ``window`` comments).
Events are numbered under that lock and delivered after it is released, in order, with
no lock held (events published from inside an engine call are delivered when that call
returns), so a subscriber may call any public method, ``close()`` included.

Memory: a model a reply is using is never unloaded under it; a load that needs its room
waits in Compiling ("waiting for the reply on X to finish"). A model unloaded while a
conversation chats with it (evicted, idle past ``keep_alive``, unloaded by the user) stays
that conversation's model, asleep: its next reply loads it again first (``on_phase``
reports "loading"). If a load fails after evicting a conversation's model, that model is
loaded back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TypeVar

from chatwidget.catalog import ModelSpec
from chatwidget.downloads.types import DownloadPlan, DownloadProgress
from chatwidget.engine.loader import placement_of
from chatwidget.engine.types import GenerationResult, GenerationSettings, LoadReport, Usage
from chatwidget.errors import (
    DiskFullError,
    DownloadCanceledError,
    EngineClosedError,
    LoadCanceledError,
    ModelBusyError,
    ModelNotLoadedError,
    ModelTooLargeError,
    ModelUnavailableError,
    NoActiveModelError,
    OrchestratorClosedError,
    SpecConflictError,
    UnknownModelError,
)
from chatwidget.failure import Failure, failure_of
from chatwidget.format import format_bytes
from chatwidget.orchestrator.events import (
    ErrorReported,
    Event,
    EventBus,
    Evicted,
    NoteChanged,
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
from chatwidget.orchestrator.ports import DownloaderPort, EnginePort, Message, Token
from chatwidget.orchestrator.queue import Job, WorkQueue
from chatwidget.orchestrator.snapshot import ConversationStatus, ModelStatus, OrchestratorSnapshot
from chatwidget.orchestrator.tokens import TokenBook
from chatwidget.orchestrator.usage import UsageBook
from chatwidget.orchestrator.worker import Worker

logger = logging.getLogger("chatwidget.orchestrator")

#: How long close() waits for the worker thread (not at all while it is inside a load,
#: which cannot be interrupted: the engine discards that load's result when it returns).
CLOSE_TIMEOUT_S = 1.5
#: How long a load waiting for replies sleeps between looks, at most.
_RECHECK_S = 1.0
#: How often a waiter polls what it cannot be notified of (a stop event, foreign replies).
_POLL_S = 0.1
#: Phases a reply reports through ``generate(on_phase=...)``.
PHASE_LOADING = "loading"  # its model is being loaded again (show "Loading model…")
PHASE_GENERATING = "generating"  # the model is ready; the reply starts
#: Failure kinds a new token can fix: set_token() retries those models.
TOKEN_FIXABLE = frozenset({"gated", "not_found"})
#: States in which a model's spec is in use and cannot change.
_BUSY_OR_LOADED = IN_FLIGHT | {ModelState.READY}
#: ModelSpec fields that do not change what is downloaded or how it loads.
_COSMETIC_FIELDS = frozenset({"name", "size_bytes", "params", "extra"})
#: Attempts at starting a reply whose model keeps disappearing before it starts.
_MAX_WAKES = 3

_T = TypeVar("_T")


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
    note: str | None = None
    device_map: dict[str, str] | None = None
    memory_bytes: int | None = None

    def status(self, last_used: float | None) -> ModelStatus:
        ready = self.state is ModelState.READY
        return ModelStatus(
            state=self.state,
            progress=self.progress,
            error=self.error,
            failure=self.failure,
            history=tuple(self.history),
            cold_swap=self.cold_swap,
            note=self.note,
            placement=placement_of(self.device_map) if ready and self.device_map else (),
            device_map=MappingProxyType(dict(self.device_map))
            if ready and self.device_map
            else None,
            memory_bytes=self.memory_bytes if ready else None,
            last_used=last_used if ready else None,
        )


@dataclass
class _Lease:
    """The model a reply holds (it follows the conversation if that switches model)."""

    repo_id: str


@dataclass(frozen=True)
class UnloadResult:
    """What :meth:`Orchestrator.unload` did: ``unloaded`` is False when the model was not
    loaded (nothing changed); ``freed_bytes`` is the memory the budget counted for it."""

    repo_id: str
    unloaded: bool
    freed_bytes: int


def same_load(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two specs download and load the same thing (names and sizes aside)."""
    return all(
        getattr(a, f.name) == getattr(b, f.name)
        for f in fields(ModelSpec)
        if f.name not in _COSMETIC_FIELDS
    )


class Orchestrator:
    """Turns user intents into downloads and loads, and switches models only when wanted.

    ``downloader`` and ``engine`` are the boundaries it drives (see
    :mod:`chatwidget.orchestrator.ports`). With ``start=False`` no thread runs and a
    test drives the queue with :meth:`step` and the idle timer with :meth:`tick`.
    ``keep_alive_s``: unload a model unused for that long (None: never). ``clock`` gives
    the time for ``keep_alive`` (tests pass a fake one).
    """

    def __init__(
        self,
        downloader: DownloaderPort,
        engine: EnginePort,
        *,
        start: bool = True,
        keep_alive_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._downloader = downloader
        self._engine = engine
        self._clock = clock
        self._keep_alive_s = _checked_keep_alive(keep_alive_s)
        self._reply_waits = 0  # jobs waiting for a reply to end (under the lock)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._bus = EventBus(self._lock)
        self._models: dict[str, _Model] = {}
        self._intent = IntentBook()
        self._usage = UsageBook()
        self._tokens = TokenBook()
        self._queue = WorkQueue()
        self._working: Job | None = None
        self._loading: Job | None = None  # the job inside engine.load now
        self._closed = False
        self._local = threading.local()  # per thread: lock depth, inside an engine call
        engine.on_evict(self._on_evict)
        self._worker: Worker | None = None
        if start:
            self._worker = Worker(
                self._changed,
                lambda: len(self._queue) > 0,
                self._run_next,
                next_deadline=self._next_expiry,
                on_deadline=self.tick,
                clock=clock,
            )
            self._worker.start()

    # --- models ---------------------------------------------------------------------

    def register(self, spec: ModelSpec) -> None:
        """Add ``spec`` to the known models; its state comes from the cache and the engine.

        Registering a known model again replaces its spec while it is at rest; a spec that
        would download or load differently while the model is in flight or loaded raises
        SpecConflictError.
        """
        loaded = self._engine.is_loaded(spec.repo_id)
        cached = loaded or self._is_downloaded(spec)
        with self._changing():
            self._check_open()
            known = self._models.get(spec.repo_id)
            if known is not None:
                self._apply_spec(known, spec)
                return
            if loaded:
                state = ModelState.READY
            else:
                state = ModelState.DOWNLOADED if cached else ModelState.NOT_DOWNLOADED
            self._models[spec.repo_id] = _Model(spec=spec, state=state)
            if loaded:
                self._usage.touch(spec.repo_id, self._clock())

    def spec(self, repo_id: str) -> ModelSpec:
        """The registered spec of ``repo_id``."""
        with self._locked():
            return self._model(repo_id).spec

    def state(self, repo_id: str) -> ModelState:
        """The lifecycle state of ``repo_id``."""
        with self._locked():
            return self._model(repo_id).state

    def request_model(self, conversation_id: str, model: ModelSpec | str) -> ModelState:
        """Make ``model`` the conversation's target; never blocks. Returns its state.

        A Ready model becomes active at once. Any other model is queued, unless it is
        already on its way, in which case only the intent changes. A ModelSpec whose
        revision or load flags differ from the known spec applies while the model is at
        rest or still queued, and raises SpecConflictError while it downloads, compiles or
        is loaded (unload or cancel it first).
        """
        spec = ModelSpec.coerce(model)
        with self._locked():
            self._intent.get(conversation_id)  # fail early, before touching the cache
            known = spec.repo_id in self._models
        if not known:
            self.register(spec)
        with self._changing():
            self._check_open()
            conversation = self._intent.get(conversation_id)
            entry = self._models[spec.repo_id]
            if isinstance(model, ModelSpec):
                self._apply_spec(entry, model)
            conversation.target = spec.repo_id
            if entry.state is ModelState.READY:
                conversation.active = spec.repo_id
                self._usage.touch(spec.repo_id, self._clock())
                self._announce(conversation)
            elif entry.state not in IN_FLIGHT:
                self._enqueue(entry, group=conversation.group)
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

    def retry(self, repo_id: str, *, group: str | None = None) -> None:
        """Queue a Failed or Canceled model again, at the back; else do nothing.

        ``group`` is the consumer asking (its token downloads it); default: the group of
        the previous attempt.
        """
        with self._changing():
            self._check_open()
            entry = self._model(repo_id)
            if entry.state not in RETRYABLE:
                logger.debug("retry(%s) ignored: it is %s", repo_id, entry.state.label)
                return
            previous = entry.job.group if entry.job is not None else None
            self._enqueue(entry, group=group if group is not None else previous)

    def unload(self, repo_id: str) -> UnloadResult:
        """Unload a Ready model now: it is Downloaded again and its memory is freed.

        Conversations that chat with it keep it (asleep): it loads again on their next
        message. A model that is not loaded is left as it is (``unloaded=False``). Raises
        ModelBusyError while a reply uses it (stop the reply first), UnknownModelError for
        a model nobody registered. Runs in the caller's thread (a garbage collection).
        """
        with self._locked():
            entry = self._model(repo_id)
            if entry.state is not ModelState.READY:
                return UnloadResult(repo_id, unloaded=False, freed_bytes=0)
            if self._usage.in_use(repo_id):
                raise ModelBusyError(
                    f"{repo_id} is answering right now: stop the reply (chat.stop()), then "
                    "unload it.",
                    (repo_id,),
                )
        # window: a reply may start here; the engine asks again when it decides (busy)
        freed = self._engine_call(
            lambda: self._engine.unload(repo_id, if_idle=True, busy=self._busy_now)
        )
        with self._changing():
            self._after_unload(repo_id, freed, reason="unload")
        return UnloadResult(repo_id, unloaded=True, freed_bytes=freed)

    # --- memory policy ------------------------------------------------------------------

    @property
    def keep_alive_s(self) -> float | None:
        """Seconds a model may stay unused before it is unloaded (None: never)."""
        return self._keep_alive_s

    def set_keep_alive(self, seconds: float | None) -> None:
        """Change ``keep_alive`` now (None: keep models loaded). Idle timers count from each
        model's last use, so lowering it may unload models at once (on the next tick)."""
        with self._changing():
            self._keep_alive_s = _checked_keep_alive(seconds)

    def tick(self) -> tuple[str, ...]:
        """Unload the models unused for longer than ``keep_alive`` (the worker calls this on
        time; with ``start=False`` tests call it). Returns the unloaded repo ids."""
        with self._locked():
            keep_alive = self._keep_alive_s
            if keep_alive is None or self._closed:
                return ()
            candidates = self._usage.idle(self._idle_candidates(), self._clock(), keep_alive)
        unloaded: list[str] = []
        for repo_id in candidates:
            with self._locked():  # the decision again, right before the action
                if not self._expired(repo_id):
                    continue
            # window: a reply or a request may come here; the engine asks again when it
            # decides (busy), and a reply that starts just after reloads the model
            try:
                freed = self._unload_if_idle(repo_id)
            except ModelBusyError:
                continue
            with self._changing():
                self._after_unload(repo_id, freed, reason="idle")
            unloaded.append(repo_id)
        return tuple(unloaded)

    # --- tokens -------------------------------------------------------------------------

    def set_token(self, group: str, token: Token) -> tuple[str, ...]:
        """Use ``token`` for the downloads ``group``'s conversations ask for (None: the
        usual sources, e.g. ``HF_TOKEN``). The token is kept out of state, events and logs.

        Models that ``group`` waits for and that failed because the hub wanted a token
        (gated, or not found: private) are queued again; returns their repo ids.
        """
        self._tokens.set(group, token)
        if token is None:
            return ()
        retried: list[str] = []
        with self._changing():
            if self._closed:
                return ()
            for conversation in self._intent.in_group(group):
                entry = self._models.get(conversation.target or "")
                if (
                    entry is not None
                    and entry.state is ModelState.FAILED
                    and entry.failure is not None
                    and entry.failure.kind in TOKEN_FIXABLE
                    and entry.spec.repo_id not in retried
                ):
                    self._enqueue(entry, group=group)
                    retried.append(entry.spec.repo_id)
        return tuple(retried)

    def plan(self, spec: ModelSpec, *, group: str | None = None) -> DownloadPlan:
        """What downloading ``spec`` would fetch, asked with ``group``'s token. A hub request
        in the caller's thread; raises a classified DownloadError (e.g. gated, not found)."""
        return self._downloader.plan(spec, token=self._tokens.get(group))

    def has_token(self, group: str) -> bool:
        """Whether ``group`` has a token of its own (the token itself is never returned)."""
        return self._tokens.has(group)

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

    def close_group(self, group: str) -> tuple[str, ...]:
        """Forget a consumer: close all of ``group``'s conversations and drop its token.

        Its models stay as they are, but no conversation holds them any more. Returns the
        closed conversation ids. Idempotent.
        """
        self._tokens.drop(group)
        with self._changing():
            return self._intent.close_group(group)

    def set_active_conversation(self, conversation_id: str, *, group: str = "default") -> None:
        """Put ``conversation_id`` on screen in ``group``.

        If its target became Ready while it was off screen, it is announced (Switched) now.
        """
        with self._changing():
            conversation = self._intent.set_active(conversation_id, group)
            self._announce(conversation)

    def active_conversation(self, group: str = "default") -> str | None:
        """The on-screen conversation of ``group``."""
        with self._locked():
            return self._intent.active_conversation(group)

    def active_model(self, conversation_id: str) -> str | None:
        """The model the conversation chats with now (Ready, or asleep: it loads again on
        the next message), if any."""
        with self._locked():
            return self._intent.get(conversation_id).active

    def requested_model(self, conversation_id: str) -> str | None:
        """The latest model asked for there; equals the active model when nothing is pending."""
        with self._locked():
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
        on_phase: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Reply on the conversation's active model, in the caller's thread.

        While the reply runs its model is never unloaded under it. If the model is asleep
        (unloaded), it is loaded first, ahead of the queue: ``on_phase(PHASE_LOADING)`` is
        called, then ``on_phase(PHASE_GENERATING)`` once it starts; if the conversation
        switched model meanwhile, the reply uses the new one. Setting ``stop`` while it
        waits returns an empty stopped result. Raises NoActiveModelError when the
        conversation has no model, ModelUnavailableError when loading it again failed.
        """
        lease = self._begin_reply(conversation_id)
        try:
            for _attempt in range(_MAX_WAKES):
                if not self._wait_until_ready(conversation_id, lease, stop, on_phase):
                    return _stopped_before_start(lease.repo_id)
                # downloads pause until the first token (prefill is what a download slows);
                # a remote model's reply takes no CPU here
                with self._locked():
                    remote = self._models[lease.repo_id].spec.is_remote
                release = _NO_HOLD if remote else self._downloader.hold()
                try:
                    return self._engine.generate(
                        lease.repo_id,
                        messages,
                        settings,
                        on_text=_released_at_first_text(release, on_text),
                        stop=stop,
                    )
                except ModelNotLoadedError:
                    # unloaded between Ready and the reply's start (idle timer, eviction, a
                    # direct engine call): it is Downloaded again; load it and go on
                    with self._changing():
                        self._mark_not_loaded(lease.repo_id)
                finally:
                    release()
            raise ModelUnavailableError(
                f"{lease.repo_id} was unloaded {_MAX_WAKES} times before the reply could "
                "start; send the message again.",
                kind="unavailable",
                retryable=True,
                action="Retry",
            )
        finally:
            self._end_reply(lease)

    # --- observation ----------------------------------------------------------------------

    def snapshot(self) -> OrchestratorSnapshot:
        """An immutable picture of every model, conversation and the queue, at one instant."""
        with self._locked():
            return OrchestratorSnapshot(
                models=MappingProxyType(
                    {k: m.status(self._usage.last_used(k)) for k, m in self._models.items()}
                ),
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
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            if not self._changed.wait_for(
                lambda: len(self._queue) == 0 and self._working is None and self._bus.idle,
                timeout,
            ):
                return False
        # a canceled download whose process is slow to exit is cleaned up in the background
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._downloader.wait_stopped(left)

    def step(self) -> bool:
        """Run the next queued job in this thread (``start=False`` only); False if none."""
        if self._worker is not None:
            raise RuntimeError(
                "step() drives an orchestrator created with start=False; "
                "this one has a worker thread."
            )
        return self._run_next()

    def close(self) -> None:
        """Cancel all work, stop the worker (within 1.5 s; at once while it is inside a load,
        whose result is then discarded), and refuse new work. Idempotent."""
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
            in_load = self._loading is not None
        if self._worker is not None and not self._worker.stop(0.0 if in_load else CLOSE_TIMEOUT_S):
            logger.info(
                "the orchestrator worker is still %s; it is a daemon thread and ends with it",
                "inside a load" if in_load else "busy",
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
        # window: the cache check runs without the lock; cancel is re-checked below
        if not self._is_downloaded(spec):
            with self._changing():
                if job.canceled:
                    return
                self._move(self._models[spec.repo_id], ModelState.DOWNLOADING)
            token = self._tokens.get(job.group)
            try:
                # window: plan and download run without the lock; intent may change freely,
                # it is read again once the download returns
                self._check_fits_before_download(spec, token)
                self._downloader.download(
                    spec,
                    on_progress=lambda p: self._on_progress(job, p),
                    cancel=job.cancel,
                    token=token,
                )
            except Exception as exc:
                self._settle_failure(job, exc, source="download")
                return
        self._load(job)

    def _load(self, job: Job) -> None:
        """Decide whether and how to load, then load; every decision is re-taken under the
        lock right before it is acted on."""
        while True:
            go = self._decide_stale(job)
            if go is None:
                continue
            if not go or self._attempt_load(job):
                return

    def _decide_stale(self, job: Job) -> bool | None:
        """A load nobody waits for goes ahead only if it fits beside every active model.

        True: load; False: stop here; None: things changed while checking, decide again.
        """
        with self._locked():
            if job.canceled:
                return False
            if self._is_wanted(job):
                return True
            keep = self._keep_all()
        # window: the fit check runs without the lock
        fits = self._fits_beside(job.spec, keep)
        with self._changing():
            if job.canceled:
                return False
            if self._is_wanted(job) or self._keep_all() != keep:
                return None  # someone asked for it, or the models to keep changed
            if not fits:
                entry = self._models[job.repo_id]
                self._clear_note(entry)  # it may have waited for a reply before going stale
                self._move(entry, ModelState.DOWNLOADED)
                return False
            return True

    def _attempt_load(self, job: Job) -> bool:
        """One call to the engine; True when the job is settled, False to decide again."""
        repo_id = job.repo_id
        with self._changing():
            if job.canceled:
                return True
            spec = job.spec  # under the lock: a precision change while downloading applies
            entry = self._models[repo_id]
            # a remote model is not compiled: its load is one request that proves it answers
            loading = ModelState.CONNECTING if job.spec.is_remote else ModelState.COMPILING
            if entry.state is not loading:
                self._move(entry, loading)
            self._loading = job
        try:
            # window: the engine decides what to evict when it runs; it asks for the latest
            # intent (these functions) at that moment, under its own lock
            report = self._engine_call(
                lambda: self._engine.load(
                    spec,
                    keep=lambda: self._keep_for(job),
                    busy=self._busy_now,
                    prefer=lambda: self._prefer_for(job),
                    cancel=job.cancel,
                )
            )
        except ModelBusyError as busy:
            with self._locked():
                self._loading = None
            return not self._wait_for_replies(job, busy.waiting_for)
        except ModelTooLargeError as exc:
            with self._changing():
                self._loading = None
                if not job.canceled and not self._is_wanted(job):
                    # no room beside the models to keep, and nobody waits for it any more
                    self._clear_note(self._models[repo_id])
                    self._move(self._models[repo_id], ModelState.DOWNLOADED)
                    return True
            self._settle_failure(job, exc, source="load")
            return True
        except Exception as exc:
            with self._locked():
                self._loading = None
            self._settle_failure(job, exc, source="load")
            self._restore_evicted(job)
            return True
        with self._changing():
            self._loading = None
            if not job.canceled:
                self._become_ready(job, report)
                return True
        logger.info("%s was canceled while compiling; unloading it", repo_id)
        # window: the canceled model is unloaded without the lock
        self._engine_call(lambda: self._engine.unload(repo_id))
        self._restore_evicted(job)
        return True

    def _become_ready(self, job: Job, report: LoadReport) -> None:
        entry = self._models[job.repo_id]
        self._clear_note(entry)
        entry.device_map = dict(report.device_map)
        entry.memory_bytes = report.estimated_bytes or report.memory_bytes
        self._move(entry, ModelState.READY, cold_swap=report.cold_swap)
        self._usage.touch(job.repo_id, self._clock())
        for conversation in self._intent.activate(job.repo_id):
            self._announce(conversation)

    def _wait_for_replies(self, job: Job, waiting_for: Sequence[str]) -> bool:
        """Show what the load waits for, then wait until those replies end, the intent
        changes or the job is canceled; False when the job is over."""
        note = f"waiting for the reply on {', '.join(waiting_for)} to finish"
        with self._changing():
            if job.canceled or self._closed:
                return False
            entry = self._models[job.repo_id]
            if entry.note != note:
                entry.note = note
                self._bus.publish(
                    NoteChanged(seq=self._bus.next_seq(), repo_id=job.repo_id, note=note)
                )
            wanted = self._is_wanted(job)
            ours = set(waiting_for) & self._usage.busy()

        def moved() -> bool:
            return (
                job.canceled
                or self._closed
                or self._is_wanted(job) != wanted
                or not (ours & self._usage.busy())
            )

        with self._changed:
            # window: the lock is released while waiting. Replies through generate() end
            # with a notification (_end_reply wakes while _reply_waits); others (direct
            # engine calls) are polled.
            self._reply_waits += 1
            try:
                self._changed.wait_for(moved, _RECHECK_S if ours else _POLL_S)
            finally:
                self._reply_waits -= 1
            return not (job.canceled or self._closed)

    def _check_fits_before_download(self, spec: ModelSpec, token: Token) -> None:
        """Refuse, before the first byte, a model that cannot fit on disk or in memory.

        The hub's listing gives the bytes to fetch and the memory the weights will take; the
        engine judges the memory with nothing protected (everything evictable counts as free).
        """
        plan = self._downloader.plan(spec, token=token)
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
            if isinstance(exc, DownloadCanceledError | LoadCanceledError | EngineClosedError):
                self._cancel_job(entry)
                return
            failure = failure_of(exc)
            message = failure.message
            logger.warning("%s of %s failed: %s", source, job.repo_id, message)
            self._clear_note(entry)
            self._move(entry, ModelState.FAILED, failure=failure)
            self._bus.publish(
                ErrorReported(
                    seq=self._bus.next_seq(),
                    source=source,
                    repo_id=job.repo_id,
                    message=message,
                    failure=failure,
                )
            )

    def _restore_evicted(self, job: Job) -> None:
        """A load that evicted models failed or was canceled: load back those that
        conversations chat with, ahead of the queue, so they keep answering on them."""
        with self._changing():
            if self._closed:
                return
            for repo_id in reversed(job.evicted):
                entry = self._models.get(repo_id)
                if (
                    entry is not None
                    and entry.state not in _BUSY_OR_LOADED
                    and self._intent.using(repo_id)
                ):
                    group = self._intent.using(repo_id)[0].group
                    self._enqueue(entry, group=group, wake=True, front=True)

    def _on_progress(self, job: Job, progress: DownloadProgress) -> None:
        with self._changing():
            entry = self._models[job.repo_id]
            if job.canceled or entry.job is not job or entry.state is not ModelState.DOWNLOADING:
                return
            entry.progress = progress
            note = progress.note or None
            if entry.note != note:
                entry.note = note
                self._bus.publish(
                    NoteChanged(seq=self._bus.next_seq(), repo_id=job.repo_id, note=note)
                )
            self._bus.publish(
                ProgressChanged(seq=self._bus.next_seq(), repo_id=job.repo_id, progress=progress)
            )

    def _on_evict(self, repo_id: str) -> None:
        """The engine unloaded ``repo_id`` to make room (or to meet new limits)."""
        with self._changing():
            if self._loading is not None and repo_id != self._loading.repo_id:
                self._loading.evicted.append(repo_id)
            self._after_unload(repo_id, None, reason="evicted")

    # --- replies ------------------------------------------------------------------------

    def _begin_reply(self, conversation_id: str) -> _Lease:
        # no event and nobody waits for a reply to start: no delivery, no thread woken
        with self._locked():
            repo_id = self._intent.get(conversation_id).active
            if repo_id is None:
                raise NoActiveModelError(
                    f"Conversation {conversation_id!r} has no active model yet: pick a model "
                    "and wait until it is Ready."
                )
            self._usage.begin(repo_id, self._clock())
            return _Lease(repo_id)

    def _end_reply(self, lease: _Lease) -> None:
        with self._locked():
            self._usage.end(lease.repo_id, self._clock())
            # who waits for a reply's end: a job that may not unload its model meanwhile,
            # and the worker when idle models are unloaded after a while
            wake = self._reply_waits > 0 or self._keep_alive_s is not None
        if wake:
            self._wake_waiters()

    def _wait_until_ready(
        self,
        conversation_id: str,
        lease: _Lease,
        stop: threading.Event | None,
        on_phase: Callable[[str], None] | None,
    ) -> bool:
        """Wait until the conversation's model is Ready, loading it again first (ahead of the
        queue) if it is asleep; the lease follows the conversation's model. False when
        stopped or closed first."""
        loading = False
        woken: Job | None = None
        while True:
            changed = False  # the common case, Ready: nothing to deliver, no one to wake
            with self._locked():
                if self._closed:
                    return False
                current = self._intent.get(conversation_id).active
                if current is None:
                    raise NoActiveModelError(
                        f"Conversation {conversation_id!r} has no active model any more: "
                        "pick a model."
                    )
                if current != lease.repo_id:  # it switched meanwhile: reply on the new one
                    now = self._clock()
                    self._usage.end(lease.repo_id, now)
                    self._usage.begin(current, now)
                    lease.repo_id, woken = current, None
                    changed = True
                entry = self._models[current]
                ready = entry.state is ModelState.READY
                if not ready:
                    changed = True
                    if woken is not None and entry.job is woken and entry.state in RETRYABLE:
                        raise self._unavailable(entry)
                    if entry.state not in IN_FLIGHT:
                        group = self._intent.get(conversation_id).group
                        self._enqueue(entry, group=group, wake=True, front=True)
                    elif entry.state is ModelState.QUEUED and entry.job is not None:
                        self._queue.push_front(entry.job)  # a reply waits for it
                        entry.job.wake = True
                    woken = entry.job
            if changed:
                self._wake_waiters()
            if ready:
                if loading and on_phase is not None:
                    on_phase(PHASE_GENERATING)
                return True
            if not loading:
                loading = True
                if on_phase is not None:
                    on_phase(PHASE_LOADING)
            self._wait_for_model(conversation_id, lease.repo_id, woken)
            if stop is not None and stop.is_set():
                return False

    def _wait_for_model(self, conversation_id: str, repo_id: str, woken: Job | None) -> None:
        with self._changed:
            # window: the lock is released while the model loads
            self._changed.wait_for(
                lambda: self._closed or self._settled(conversation_id, repo_id, woken), _POLL_S
            )

    def _settled(self, conversation_id: str, repo_id: str, woken: Job | None) -> bool:
        """Whether a reply waiting for ``repo_id`` should look again (call with the lock)."""
        try:
            current = self._intent.get(conversation_id).active
        except KeyError:
            return True
        entry = self._models[repo_id]
        return (
            current != repo_id
            or entry.state is ModelState.READY
            or entry.job is not woken
            or entry.state not in IN_FLIGHT
        )

    @staticmethod
    def _unavailable(entry: _Model) -> ModelUnavailableError:
        failure = entry.failure
        if failure is None:  # canceled
            return ModelUnavailableError(
                f"Loading {entry.spec.repo_id} again was canceled, so the reply could not "
                "start. Send the message again to load it, or pick another model.",
                kind="canceled",
                retryable=True,
                action="Retry",
            )
        return ModelUnavailableError(
            f"{entry.spec.repo_id} could not be loaded again for this reply: {failure.message}",
            kind=failure.kind,
            retryable=failure.retryable,
            action=failure.action,
        )

    # --- decisions (call with the lock held) ------------------------------------------------

    def _is_wanted(self, job: Job) -> bool:
        """Whether anyone waits for ``job``'s model: a conversation whose target it is (its
        pending switch, or its asleep model asked for again), a reply, or a wake-up."""
        repo_id = job.repo_id
        return bool(
            self._intent.targeting(repo_id)
            or self._usage.in_use(repo_id)
            or (job.wake and self._intent.using(repo_id))
        )

    def _keep_all(self) -> tuple[str, ...]:
        """Models a load nobody waits for must leave alone: every active model, every model
        a reply uses."""
        active = self._intent.active_models()
        return (*active, *sorted(self._usage.busy() - set(active)))

    def _keep_for(self, job: Job) -> tuple[str, ...]:
        with self._locked():
            return () if self._is_wanted(job) else self._keep_all()

    def _prefer_for(self, job: Job) -> tuple[str, ...]:
        """Models a wanted load evicts last: other conversations' models (they would fall
        asleep and load again on their next message)."""
        with self._locked():
            wanting = {c.conversation_id for c in self._intent.targeting(job.repo_id)}
            return self._intent.active_models(excluding=frozenset(wanting))

    def _busy_now(self) -> frozenset[str]:
        with self._locked():
            return self._usage.busy()

    def _idle_candidates(self) -> list[str]:
        """Ready local models keep_alive may unload (a remote model takes no memory here)."""
        loading = self._loading.repo_id if self._loading is not None else None
        return [
            r
            for r, m in self._models.items()
            if m.state is ModelState.READY and r != loading and not m.spec.is_remote
        ]

    def _expired(self, repo_id: str) -> bool:
        keep_alive = self._keep_alive_s
        entry = self._models.get(repo_id)
        last = self._usage.last_used(repo_id)
        return (
            keep_alive is not None
            and entry is not None
            and entry.state is ModelState.READY
            and not self._usage.in_use(repo_id)
            and last is not None
            and self._clock() - last >= keep_alive
        )

    def _next_expiry(self) -> float | None:
        keep_alive = self._keep_alive_s
        if keep_alive is None or self._closed:
            return None
        return self._usage.next_expiry(self._idle_candidates(), keep_alive)

    # --- helpers (call with the lock held unless said otherwise) ---------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the state lock (and count how deep, so delivery never runs under it)."""
        with self._changed:
            self._local.depth = getattr(self._local, "depth", 0) + 1
            try:
                yield
            finally:
                self._local.depth -= 1

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the state lock, then deliver the events published meanwhile (unless this
        thread still holds a lock: an outer block, or an engine call), then wake waiters."""
        try:
            with self._locked():
                yield
        finally:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Deliver the events published (unless this thread still holds a lock: an outer
        block, or an engine call), then wake everyone waiting on the state lock."""
        if getattr(self._local, "depth", 0) == 0 and not getattr(self._local, "engine", 0):
            self._bus.deliver()
        with self._changed:
            self._changed.notify_all()

    def _engine_call(self, call: Callable[[], _T]) -> _T:
        """Call the engine (no lock held); events it causes are delivered once it returns."""
        self._local.engine = getattr(self._local, "engine", 0) + 1
        try:
            return call()
        finally:
            self._local.engine -= 1
            if self._local.engine == 0 and getattr(self._local, "depth", 0) == 0:
                self._bus.deliver()

    def _unload_if_idle(self, repo_id: str) -> int:
        """Unload an expired model unless, when the engine decides, it is in use or was used
        since (its idle time is then checked again)."""
        return self._engine_call(
            lambda: self._engine.unload(
                repo_id,
                if_idle=True,
                busy=lambda: self._busy_unless(repo_id, lambda: self._expired(repo_id)),
            )
        )

    def _busy_unless(self, repo_id: str, still: Callable[[], bool]) -> frozenset[str]:
        """For the engine, under its lock: the models to leave alone now (replies in flight,
        and ``repo_id`` itself unless ``still()``)."""
        with self._locked():
            busy = self._usage.busy()
            return busy if still() else busy | {repo_id}

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

    def _apply_spec(self, entry: _Model, spec: ModelSpec) -> None:
        """Take a new spec for a known model, or refuse it clearly; never drop it silently."""
        if spec == entry.spec:
            return
        if same_load(spec, entry.spec):
            entry.spec = spec  # only names or sizes differ
            return
        queued = entry.state is ModelState.QUEUED and entry.job is not self._working
        if entry.state is ModelState.DOWNLOADING and same_load(
            replace(spec, dtype=entry.spec.dtype, quantization=entry.spec.quantization),
            entry.spec,
        ):
            # only the precision differs: the files are the same, the load has not begun
            # (the worker reads job.spec when it starts the load)
            entry.spec = spec
            if entry.job is not None:
                entry.job.spec = spec
            return
        if entry.state not in _BUSY_OR_LOADED or queued:
            entry.spec = spec
            if queued and entry.job is not None:
                entry.job.spec = spec  # not started yet: it will use the new spec
            return
        old, repo_id = entry.spec, spec.repo_id
        how = (
            f"unload it first (chat.unload({repo_id!r}))"
            if entry.state is ModelState.READY
            else "cancel it first (chat.cancel_download(...))"
        )
        raise SpecConflictError(
            f"{repo_id} is {entry.state.label} with revision {old.revision!r} "
            f"(trust_remote_code={old.trust_remote_code}, allow_pickle={old.allow_pickle}, "
            f"precision {old.quantization or old.dtype}); to use revision {spec.revision!r} "
            f"(trust_remote_code={spec.trust_remote_code}, allow_pickle={spec.allow_pickle}, "
            f"precision {spec.quantization or spec.dtype}), {how}, then select it again."
        )

    def _enqueue(
        self, entry: _Model, *, group: str | None, wake: bool = False, front: bool = False
    ) -> None:
        job = Job(entry.spec, group=group, wake=wake)
        entry.job = job
        self._move(entry, ModelState.QUEUED)
        if front:
            self._queue.push_front(job)
        else:
            self._queue.push(job)

    def _cancel_job(self, entry: _Model) -> None:
        job = entry.job
        if job is not None:
            self._queue.remove(job)
            job.canceled = True
            job.cancel.set()
        self._clear_note(entry)
        self._move(entry, ModelState.CANCELED)
        self._intent.withdraw_target(entry.spec.repo_id)

    def _mark_not_loaded(self, repo_id: str) -> None:
        entry = self._models.get(repo_id)
        if entry is not None and entry.state is ModelState.READY:
            self._after_unload(repo_id, None, reason="evicted")

    def _after_unload(self, repo_id: str, freed: int | None, *, reason: str) -> None:
        entry = self._models.get(repo_id)
        if entry is None or entry.state is not ModelState.READY:
            return
        freed_bytes = freed if freed is not None else entry.memory_bytes or 0
        self._move(entry, ModelState.DOWNLOADED)
        entry.device_map = None
        entry.memory_bytes = None
        self._usage.forget(repo_id)
        self._bus.publish(
            Evicted(
                seq=self._bus.next_seq(), repo_id=repo_id, reason=reason, freed_bytes=freed_bytes
            )
        )

    def _clear_note(self, entry: _Model) -> None:
        if entry.note is not None:
            entry.note = None
            self._bus.publish(
                NoteChanged(seq=self._bus.next_seq(), repo_id=entry.spec.repo_id, note=None)
            )

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


def _checked_keep_alive(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(f"keep_alive_s must be zero or more seconds, or None; got {seconds!r}")
    return float(seconds)


def _NO_HOLD() -> None:  # noqa: N802 - a constant release that does nothing
    return None


def _released_at_first_text(
    release: Callable[[], None], on_text: Callable[[str], None] | None
) -> Callable[[str], None]:
    """``on_text`` that first releases the downloads' hold (the first token is out)."""

    def first(piece: str) -> None:
        release()
        if on_text is not None:
            on_text(piece)

    return first


def _stopped_before_start(repo_id: str) -> GenerationResult:
    usage = Usage(
        model=repo_id,
        prompt_tokens=0,
        new_tokens=0,
        time_to_first_token_s=None,
        tokens_per_s=None,
        duration_s=0.0,
    )
    return GenerationResult(text="", stopped=True, usage=usage)
