"""One shared download queue and model pool per (endpoint, cache) in a kernel.

Every :class:`~chatwidget.widget.ChatWidget` in a kernel that points at the same hub
endpoint and HF cache shares one :class:`Runtime`, so a model is never downloaded or
loaded twice. The runtime is reference-counted: the last consumer to go closes it, which
stops the queue worker, kills any download child and unloads every model (within 2 s, even
during a load). ``atexit`` closes what is left when the kernel shuts down, with the same
bound.

Consumers. :func:`connect` gives an owner (a widget) a :class:`Consumer`: its group id for
the orchestrator, its own Hugging Face token, and its share of the runtime. The runtime holds
the owner only weakly: when the owner is garbage-collected, a finalizer hands the consumer to
a reaper thread, which closes its conversations (so they hold no model), drops its token and
releases its share. An owner that is never collected (ipywidgets keeps every widget) does not
pin memory either: models of conversations nobody uses are unloaded whenever another model
needs the room, and load again if that conversation is used.

Start-up: partial downloads that dead processes left in the cache are removed (only files
whose lock is free, never a live process's).
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import queue
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatwidget.catalog import ModelSpec
from chatwidget.downloads import Downloader, DownloadPlan
from chatwidget.downloads.cache import remove_all_incomplete
from chatwidget.engine import Engine
from chatwidget.engine.remote import RemoteEngine, RoutingDownloader, RoutingEngine
from chatwidget.orchestrator import Orchestrator
from chatwidget.orchestrator.orchestrator import UnloadResult
from chatwidget.orchestrator.policy import MemoryPolicy, parse_duration, parse_max_loaded_models
from chatwidget.orchestrator.policy import parse_size as parse_memory_budget

log = logging.getLogger("chatwidget.runtime")

_lock = threading.Lock()
_runtimes: dict[tuple[str, str], Runtime] = {}
_group_ids = itertools.count(1)
_UNSET: Any = object()


def default_endpoint() -> str:
    """The hub endpoint huggingface_hub would use (``HF_ENDPOINT`` or the public Hub)."""
    import huggingface_hub.constants as hf_constants

    return os.environ.get("HF_ENDPOINT") or str(hf_constants.ENDPOINT)


def default_cache_dir() -> Path:
    """The standard HF hub cache (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    import huggingface_hub.constants as hf_constants

    return Path(hf_constants.HF_HUB_CACHE)


@dataclass
class Runtime:
    """The downloader, engines and orchestrator that widgets share.

    ``engine`` runs local models; ``remote`` reaches models on servers (its ``servers`` is
    the registry); the orchestrator drives both through routing ports.
    """

    key: tuple[str, str]
    downloader: Downloader
    engine: Engine
    orchestrator: Orchestrator
    remote: RemoteEngine = field(default_factory=RemoteEngine)
    policy: MemoryPolicy = field(default_factory=MemoryPolicy)
    users: int = 0
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def configure(
        self,
        *,
        memory_budget: int | str | None = _UNSET,
        max_loaded_models: int | str | None = _UNSET,
        keep_alive: float | str | None = _UNSET,
    ) -> MemoryPolicy:
        """Change the memory policy now; arguments left out keep their value, None restores
        the default (budget: half the free memory; no model limit; never unload idle models).

        Values are parsed like ``ChatWidget(...)``'s (``"8GB"``, ``"10m"``, ...); a bad value
        raises InvalidSettingError and changes nothing. Models beyond a lowered limit are
        unloaded at once (least recently used first, never one a reply is using). The policy
        is per runtime: every widget on this hub and cache shares it, and the last call wins.
        """
        with self._lock:
            policy = self.policy
            budget = (
                policy.memory_budget_bytes
                if memory_budget is _UNSET
                else None
                if memory_budget is None
                else parse_memory_budget(memory_budget, name="memory_budget")
            )
            count = (
                policy.max_loaded_models
                if max_loaded_models is _UNSET
                else parse_max_loaded_models(max_loaded_models)
            )
            alive = policy.keep_alive_s if keep_alive is _UNSET else parse_duration(keep_alive)
            new = MemoryPolicy(budget, count, alive)
            if new != policy:
                log.info("memory policy: %s", new)
            self.policy = new
        self.engine.set_limits(memory_budget_bytes=budget, max_loaded_models=count)
        self.orchestrator.set_keep_alive(alive)
        return new

    def unload(self, repo_id: str) -> UnloadResult:
        """Unload a Ready model now (see :meth:`Orchestrator.unload`)."""
        return self.orchestrator.unload(repo_id)

    def set_token(self, group: str, token: str | bool | None) -> tuple[str, ...]:
        """Use ``token`` for ``group``'s downloads only; returns the models queued again
        (see :meth:`Orchestrator.set_token`)."""
        return self.orchestrator.set_token(group, token)

    def plan(self, spec: ModelSpec | str, *, group: str | None = None) -> DownloadPlan:
        """What downloading ``spec`` would fetch, asked with ``group``'s token (a hub request:
        call it off the kernel's main thread where it matters)."""
        return self.orchestrator.plan(ModelSpec.coerce(spec), group=group)

    def close(self) -> None:
        """Stop the queue, kill any download, unload every model. Idempotent; returns within
        about 2 s even while a model loads (that load's result is freed when it returns)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        steps = (
            self.orchestrator.close,
            self.downloader.close,
            self.engine.close,
            self.remote.close,
        )
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("Closing %s failed", step)


def acquire(
    *,
    endpoint: str | None,
    cache_dir: str | Path | None,
    token: str | bool | None = None,
    group: str | None = None,
    memory_budget: int | str | None = None,
    max_loaded_models: int | str | None = None,
    keep_alive: float | str | None = None,
) -> Runtime:
    """Get (or create) the runtime for this endpoint and cache and take a reference.

    ``token`` is used only for ``group``'s downloads when ``group`` is given (without a group
    it becomes the runtime's default token, as before). The memory settings, where given,
    are applied to the runtime (see :meth:`Runtime.configure`); a new runtime also reads
    ``CHATWIDGET_MEMORY_BUDGET``, ``CHATWIDGET_MAX_LOADED_MODELS`` and
    ``CHATWIDGET_KEEP_ALIVE``. Bad values raise InvalidSettingError before anything starts.
    """
    policy = MemoryPolicy.resolve(
        memory_budget=memory_budget, max_loaded_models=max_loaded_models, keep_alive=keep_alive
    )
    ep = (endpoint or default_endpoint()).rstrip("/")
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir().resolve()
    key = (ep, str(cache))
    with _lock:
        rt = _runtimes.get(key)
        created = rt is None or rt.closed
        if rt is None or rt.closed:
            _clean_partial_downloads(cache)
            # prestart: keep one idle download process ready, so a download starts without
            # paying for a new interpreter (about 1 s on a small machine).
            downloader = Downloader(
                endpoint=ep, cache_dir=cache, token=None if group else token, prestart=True
            )
            engine = Engine(
                cache_dir=cache,
                memory_budget_bytes=policy.memory_budget_bytes,
                max_loaded_models=policy.max_loaded_models,
            )
            remote = RemoteEngine()
            orchestrator = Orchestrator(
                RoutingDownloader(downloader),
                RoutingEngine(engine, remote),
                keep_alive_s=policy.keep_alive_s,
            )
            rt = Runtime(key, downloader, engine, orchestrator, remote, policy=policy)
            _runtimes[key] = rt
        elif token is not None and group is None:
            rt.downloader.set_token(token)
        rt.users += 1
    if group is not None and token is not None:
        rt.set_token(group, token)
    if not created and any(v is not None for v in (memory_budget, max_loaded_models, keep_alive)):
        rt.configure(
            memory_budget=_UNSET if memory_budget is None else memory_budget,
            max_loaded_models=_UNSET if max_loaded_models is None else max_loaded_models,
            keep_alive=_UNSET if keep_alive is None else keep_alive,
        )
    return rt


def release(runtime: Runtime, *, group: str | None = None) -> None:
    """Drop a reference (and ``group``'s conversations and token); the last one closes the
    runtime."""
    if group is not None:
        runtime.orchestrator.close_group(group)
    with _lock:
        runtime.users -= 1
        last = runtime.users <= 0
        if last and _runtimes.get(runtime.key) is runtime:
            _runtimes.pop(runtime.key, None)
    if last:
        runtime.close()


def _clean_partial_downloads(cache: Path) -> None:
    try:
        removed = remove_all_incomplete(cache)
    except OSError as exc:
        log.warning("Could not look for partial downloads in %s: %s", cache, exc)
        return
    if removed:
        log.info("Removed %d partial download file(s) that dead processes left", len(removed))


# --- consumers ------------------------------------------------------------------------------


class Consumer:
    """One user of a runtime (a widget): a group for its conversations, its own token.

    Made by :func:`connect`. :meth:`close` (or the owner being garbage-collected) closes the
    group's conversations, drops its token and releases its share of the runtime.
    """

    def __init__(self, runtime: Runtime, group: str) -> None:
        self.runtime = runtime
        self.group = group
        self._closed = False
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def orchestrator(self) -> Orchestrator:
        return self.runtime.orchestrator

    @property
    def closed(self) -> bool:
        return self._closed

    def set_token(self, token: str | bool | None) -> tuple[str, ...]:
        """Use ``token`` for this consumer's downloads only (it never enters state, events,
        logs or reprs); failed gated models it waits for are queued again (returned)."""
        return self.runtime.set_token(self.group, token)

    def close(self) -> None:
        """Release this consumer. Idempotent; safe from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            finalizer = self._finalizer
        if finalizer is not None:
            finalizer.detach()
        release(self.runtime, group=self.group)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Consumer(group={self.group!r}, {state})"


def connect(
    owner: object,
    *,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    group: str | None = None,
    memory_budget: int | str | None = None,
    max_loaded_models: int | str | None = None,
    keep_alive: float | str | None = None,
) -> Consumer:
    """Join the runtime for this endpoint and cache as a consumer owned by ``owner``.

    Only a weak reference to ``owner`` is kept: once it is garbage-collected, the consumer is
    closed by the reaper thread (never inside the garbage collector itself). ``group`` names
    the consumer's conversations' group (default: a new unique one). The other arguments are
    :func:`acquire`'s.
    """
    group = group or f"consumer-{next(_group_ids)}"
    runtime = acquire(
        endpoint=endpoint,
        cache_dir=cache_dir,
        token=token,
        group=group,
        memory_budget=memory_budget,
        max_loaded_models=max_loaded_models,
        keep_alive=keep_alive,
    )
    consumer = Consumer(runtime, group)
    _reaper.start()  # before any finalizer can hand it work
    finalizer = weakref.finalize(owner, _reaper.put, consumer)
    finalizer.atexit = False  # at exit, close_all() closes the runtimes instead
    consumer._finalizer = finalizer
    return consumer


class _Reaper:
    """Closes consumers whose owner was garbage-collected, in its own thread.

    A finalizer may run anywhere the garbage collector runs (inside a lock, mid-update), so it
    only appends the consumer to a ``queue.SimpleQueue`` (safe there, takes no lock of ours);
    this thread, started by :func:`connect` beforehand, does the rest.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Consumer] = queue.SimpleQueue()
        self._handed: collections.deque[None] = collections.deque()  # append is atomic
        self._done = 0  # written by the reaper thread only
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def put(self, consumer: Consumer) -> None:
        """Called by a finalizer: hand ``consumer`` over (never blocks, takes no lock)."""
        self._handed.append(None)
        self._queue.put(consumer)

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="chatwidget-reaper", daemon=True
                )
                self._thread.start()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every consumer handed over so far is closed (tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._done >= len(self._handed), timeout)

    def _run(self) -> None:
        while True:
            consumer = self._queue.get()
            try:
                log.info("closing %r: its owner was garbage-collected", consumer)
                consumer.close()
            except Exception:
                log.exception("closing %r failed", consumer)
            finally:
                with self._idle:
                    self._done += 1
                    self._idle.notify_all()


_reaper = _Reaper()


def wait_for_reaper(timeout: float | None = None) -> bool:
    """Wait until consumers of garbage-collected owners are closed; False on timeout."""
    return _reaper.wait_idle(timeout)


@atexit.register
def close_all() -> None:
    """Close every runtime (kernel shutdown); never waits for a load in progress."""
    with _lock:
        runtimes = list(_runtimes.values())
        _runtimes.clear()
    for rt in runtimes:
        rt.close()
