"""The engine facade: load, warm-pool, generate, unload and free memory.

Threading:

* ``_load_lock`` lets one load run at a time. A load may run while generations run.
* ``_state_lock`` guards the pool and callbacks; it is held only for bookkeeping, never
  while loading or generating, so ``is_loaded``/``loaded_models``/``check_fit`` answer
  at once from the kernel's main thread while the worker thread loads. Callbacks
  (``on_evict``) are called with no engine lock but the load lock held.
* Each loaded model has its own generate lock: two generations on one model run one
  after the other, never interleaved. A generation holds its own reference to the model
  and pins it: the pool never evicts a model in use, and a model unloaded mid-reply stays
  accounted (retired) until the reply ends, when its memory is freed.
* :meth:`close` never waits for a load: a load that is still in ``from_pretrained`` when
  the engine closes discards its result and frees it when it returns.

Memory policy (see :mod:`chatwidget.engine.pool` for the eviction rule): models in
``keep`` are never evicted, and a model that cannot fit beside them is refused with
:class:`ModelTooLargeError` before anything is loaded or evicted. A model that would fit
once replies in flight end is refused with :class:`ModelBusyError` (nothing evicted), so
the caller can wait: two models never sit in memory above the budget.
``LoadReport.cold_swap`` is True when the most recently used model had to be unloaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chatwidget.catalog import ModelSpec
from chatwidget.engine import memory
from chatwidget.engine.loader import LoadedModel, find_in_cache, load_from_cache
from chatwidget.engine.pool import EvictionPlan, WarmPool
from chatwidget.engine.types import (
    FitReport,
    GenerationResult,
    GenerationSettings,
    LoadReport,
    Names,
    resolve_names,
)
from chatwidget.errors import (
    EngineClosedError,
    ModelBusyError,
    ModelNotDownloadedError,
    ModelNotLoadedError,
    ModelTooLargeError,
)
from chatwidget.format import format_bytes

logger = logging.getLogger("chatwidget.engine")

_MIB = 1024 * 1024
#: How often a generation waiting for its model's lock checks its stop event.
_LOCK_POLL_S = 0.05


def _mib(n: int) -> str:
    return f"{n / _MIB:,.0f} MiB"


class Engine:
    """Loads models from the local HF cache and streams replies from them.

    ``memory_budget_bytes`` caps the warm pool (the summed estimates of loaded models);
    by default it is half of the RAM (plus GPU memory) free when the engine is created.
    ``max_loaded_models`` caps how many models are in memory at once (None: no cap).
    ``device_map`` is passed to ``from_pretrained`` ("auto": accelerate places the model).
    """

    def __init__(
        self,
        *,
        cache_dir: str | Path | None = None,
        memory_budget_bytes: int | None = None,
        max_loaded_models: int | None = None,
        device_map: str | dict[str, Any] = "auto",
    ) -> None:
        self.cache_dir = cache_dir
        self.device_map = device_map
        self.memory_budget_bytes = self._checked_budget(memory_budget_bytes)
        self.max_loaded_models = self._checked_count(max_loaded_models)
        self._pool = WarmPool()
        self._load_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._evict_callbacks: list[Callable[[str], None]] = []
        self._active_stops: set[threading.Event] = set()
        self._closed = False

    # --- settings ---------------------------------------------------------------------

    @staticmethod
    def _checked_budget(budget: int | None) -> int:
        if budget is None:
            return memory.default_budget_bytes()
        if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"memory_budget_bytes must be a positive int, got {budget!r}")
        return budget

    @staticmethod
    def _checked_count(count: int | None) -> int | None:
        bad = isinstance(count, bool) or not isinstance(count, int) or count < 1
        if count is not None and bad:
            raise ValueError(f"max_loaded_models must be at least 1 or None, got {count!r}")
        return count

    def set_limits(
        self, *, memory_budget_bytes: int | None = None, max_loaded_models: int | None = None
    ) -> tuple[str, ...]:
        """Change the budget (None: the default) and the model cap (None: none) now.

        Models beyond the new limits are unloaded, least recently used first, except those
        a reply is using (they stay until it ends). Returns the unloaded repo ids; the
        ``on_evict`` callbacks hear of each.
        """
        budget = self._checked_budget(memory_budget_bytes)
        count = self._checked_count(max_loaded_models)
        with self._state_lock:
            self.memory_budget_bytes = budget
            self.max_loaded_models = count
            evicted: list[LoadedModel] = []
            for repo_id in self._pool.repo_ids():  # least recently used first
                over_budget = self._pool.used_bytes() > budget
                over_count = count is not None and self._pool.resident_count() > count
                if not (over_budget or over_count):
                    break
                entry = self._pool.get(repo_id)
                if entry is not None and entry.users == 0:
                    self._pool.remove(repo_id)
                    evicted.append(entry)
        ids = tuple(e.repo_id for e in evicted)
        del evicted
        if ids:
            logger.info("unloaded %s to meet the new memory limits", ids)
            self._release_memory()
            self._notify_evicted(ids)
        return ids

    # --- queries ----------------------------------------------------------------------

    def is_loaded(self, repo_id: str) -> bool:
        """True when the model is in the warm pool ("Ready")."""
        with self._state_lock:
            return repo_id in self._pool

    def loaded_models(self) -> list[str]:
        """Loaded models, least recently used first."""
        with self._state_lock:
            return self._pool.repo_ids()

    def used_bytes(self) -> int:
        """Memory the pool accounts now: loaded models plus those a reply still holds."""
        with self._state_lock:
            return self._pool.used_bytes()

    def device_map_of(self, repo_id: str) -> dict[str, str] | None:
        """Where a loaded model's modules sit (``hf_device_map``), or None if not loaded."""
        with self._state_lock:
            entry = self._pool.get(repo_id)
            return dict(entry.device_map) if entry is not None else None

    def model_and_tokenizer(self, repo_id: str) -> tuple[Any, Any]:
        """The loaded model and tokenizer objects, for inspection.

        Holding on to them keeps their memory alive after an unload.
        """
        with self._state_lock:
            entry = self._pool.get(repo_id)
        if entry is None:
            raise ModelNotLoadedError(f"{repo_id} is not loaded; load it first.")
        return entry.model, entry.tokenizer

    def on_evict(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(repo_id)`` whenever the warm pool evicts a model to make room
        (or to meet new limits). Explicit :meth:`unload` calls do not call it."""
        with self._state_lock:
            self._evict_callbacks.append(callback)

    def estimate_memory(self, spec: ModelSpec) -> int:
        """Bytes the model needs loaded at its precision (:mod:`chatwidget.fit`: weights from
        the cached safetensors headers, KV cache, activations, tokenizer, overhead). Before a
        download: what the download plan learned from the hub, else ``spec.size_bytes``.
        Raises ModelNotDownloadedError when nothing is known, PrecisionUnavailableError for
        a quantization this machine cannot load."""
        try:
            cached = find_in_cache(spec, self.cache_dir)
        except ModelNotDownloadedError:
            known = memory.uncached_model_bytes(spec, self.cache_dir)
            if known is None:
                raise
            return known
        return memory.cached_model_bytes(cached)

    def check_fit(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> FitReport:
        """Whether ``spec`` fits while the models in ``keep`` stay loaded. Changes nothing.

        Replies in flight count as temporary: a model that fits once they end fits.
        """
        required = self.estimate_memory(spec)
        device = self._target_device(required)
        with self._state_lock:
            plan = self._plan(required, frozenset(keep))
            loaded = spec.repo_id in self._pool
            message = self._fit_message(spec, required, plan, keep, loaded)
        fits = loaded or plan.fits or bool(plan.waiting_for)
        beside = loaded or (plan.fits and not plan.evict)
        return FitReport(
            repo_id=spec.repo_id,
            required_bytes=required,
            available_bytes=plan.available_bytes,
            fits=fits,
            fits_beside_loaded=beside,
            device=device,
            message=message,
        )

    # --- load / unload ----------------------------------------------------------------

    def load(
        self,
        spec: ModelSpec,
        *,
        keep: Names = (),
        busy: Names = (),
        prefer: Names = (),
        cancel: threading.Event | None = None,
    ) -> LoadReport:
        """Load ``spec`` from the local cache ("Compiling"); one load runs at a time.

        ``cancel`` is accepted for the port's sake: ``from_pretrained`` cannot be interrupted,
        so a canceled load runs to its end and the caller unloads it.

        ``keep``: never evicted (no room beside them: ModelTooLargeError). ``busy``: never
        evicted, but worth waiting for (ModelBusyError names them), as are models a reply is
        using now. ``prefer``: evicted only after every other candidate. Each may be a
        function, called under the engine's lock when it decides. Nothing is evicted unless
        the load then goes ahead.

        A model already in the pool is only marked most recently used (``already_loaded``).
        Raises ModelNotDownloadedError, ModelTooLargeError, ModelBusyError, ModelLoadError,
        or EngineClosedError when the engine was closed before or during the load.
        """
        with self._load_lock:
            self._check_open()
            started_at = time.time()
            with self._state_lock:
                entry = self._pool.get(spec.repo_id)
                if entry is not None:
                    self._pool.touch(spec.repo_id)
                    return LoadReport(
                        repo_id=spec.repo_id,
                        started_at=started_at,
                        duration_s=0.0,
                        memory_bytes=0,
                        device_map=dict(entry.device_map),
                        cold_swap=False,
                        evicted=(),
                        already_loaded=True,
                        estimated_bytes=entry.memory_bytes,
                    )
            cached = find_in_cache(spec, self.cache_dir)
            required = memory.cached_model_bytes(cached)
            with self._state_lock:
                kept = resolve_names(keep)
                plan = self._plan(required, kept, resolve_names(busy), resolve_names(prefer))
                if plan.waiting_for:
                    raise ModelBusyError(self._busy_message(spec, plan), plan.waiting_for)
                if not plan.fits:
                    raise ModelTooLargeError(self._fit_message(spec, required, plan, kept, False))
                most_recent = self._pool.most_recent()
                # drop the pool's references at once: nothing here may keep them alive
                evicted_ids = tuple(r for r in plan.evict if self._pool.remove(r) is not None)
            cold_swap = most_recent is not None and most_recent in evicted_ids
            if evicted_ids:
                logger.info("evicted %s to make room for %s", evicted_ids, spec.repo_id)
                self._release_memory()
                self._notify_evicted(evicted_ids)
            started_at = time.time()
            t0 = time.perf_counter()
            rss0, gpu0 = memory.process_rss_bytes(), memory.cuda_allocated_bytes()
            loaded = load_from_cache(
                cached, cache_dir=self.cache_dir, device_map=self.device_map, memory_bytes=required
            )
            duration = time.perf_counter() - t0
            gpu_delta = memory.cuda_allocated_bytes() - gpu0
            taken = gpu_delta if gpu_delta > 0 else memory.process_rss_bytes() - rss0
            with self._state_lock:
                closed = self._closed
                if not closed:
                    self._pool.add(loaded)
            device_map = dict(loaded.device_map)
            if closed:
                del loaded
                self._release_memory()
                logger.info("the engine closed while %s loaded; it was discarded", spec.repo_id)
                raise EngineClosedError(
                    f"The engine closed while {spec.repo_id} was loading; it was discarded."
                )
            del loaded
            logger.info(
                "loaded %s in %.2fs (%s)", spec.repo_id, duration, format_bytes(max(0, taken))
            )
            return LoadReport(
                repo_id=spec.repo_id,
                started_at=started_at,
                duration_s=duration,
                memory_bytes=max(0, taken),
                device_map=device_map,
                cold_swap=cold_swap,
                evicted=evicted_ids,
                estimated_bytes=required,
            )

    def unload(self, repo_id: str, *, if_idle: bool = False, busy: Names = ()) -> int:
        """Drop the model and free its memory; returns the bytes freed (its accounted
        estimate), 0 if it was not loaded.

        A generation in flight on it finishes first on its own reference; the memory is
        released (and counted as used until then) when that reply ends. With ``if_idle``,
        a model a reply is using, or named in ``busy`` (a function is called under the
        engine's lock, when it decides), is left loaded and ModelBusyError is raised instead.
        """
        with self._state_lock:
            entry = self._pool.get(repo_id)
            if entry is None:
                return 0
            if if_idle and (entry.users > 0 or repo_id in resolve_names(busy)):
                raise ModelBusyError(
                    f"{repo_id} is answering right now: stop the reply, then unload it.",
                    (repo_id,),
                )
            self._pool.remove(repo_id)
            freed = entry.memory_bytes
            deferred = entry.users > 0
        del entry
        if not deferred:
            self._release_memory()
        logger.info("unloaded %s%s", repo_id, " (freed when its reply ends)" if deferred else "")
        return freed

    def close(self) -> None:
        """Stop generations in flight, unload every model and free the memory. Never waits
        for a load in progress: its result is discarded and freed when it returns."""
        with self._state_lock:
            self._closed = True
            for event in self._active_stops:
                event.set()
            entries = self._pool.drain()
        del entries
        self._release_memory()

    # --- generate ---------------------------------------------------------------------

    def generate(
        self,
        repo_id: str,
        messages: Sequence[Mapping[str, str]],
        settings: GenerationSettings,
        *,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerationResult:
        """Stream a reply on a loaded model through its chat template. Blocks until done.

        Text pieces go to ``on_text`` as they are produced. Setting ``stop`` ends the
        reply within one decoding step; the partial text is returned with
        ``stopped=True``. Errors in ``generate`` surface as GenerationError.
        """
        from chatwidget.engine.streaming import validate_request

        validate_request(messages, settings)
        with self._state_lock:
            entry = self._pool.get(repo_id)
            if entry is None:
                raise ModelNotLoadedError(
                    f"{repo_id} is not loaded (loaded: {self._pool.repo_ids() or 'none'}); "
                    "load it before generating."
                )
            self._pool.touch(repo_id)
            entry.users += 1  # pinned: never evicted while this reply runs
            internal_stop = threading.Event()
            self._active_stops.add(internal_stop)
        try:
            return self._generate_on(
                entry, messages, settings, on_text=on_text, stops=(stop, internal_stop)
            )
        finally:
            with self._state_lock:
                self._active_stops.discard(internal_stop)
                freed = self._pool.release(entry)
            del entry
            if freed:  # it was unloaded mid-reply: its memory goes now
                self._release_memory()

    def _generate_on(
        self,
        entry: LoadedModel,
        messages: Sequence[Mapping[str, str]],
        settings: GenerationSettings,
        *,
        on_text: Callable[[str], None] | None,
        stops: tuple[threading.Event | None, threading.Event],
    ) -> GenerationResult:
        from chatwidget.engine.streaming import stream_reply

        events = [e for e in stops if e is not None]
        lock = entry.generate_lock
        try:
            if any(e.is_set() for e in events) or not self._acquire(lock, events):
                return _stopped_before_start(entry.repo_id)
            try:
                return stream_reply(entry, messages, settings, on_text=on_text, stop_events=events)
            finally:
                lock.release()
        except BaseException as exc:
            del entry  # an error held by the caller must not keep this model alive
            memory.drop_frame_references(exc)
            raise

    # --- internals --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("The engine is closed; create a new one (a new widget).")

    @staticmethod
    def _acquire(lock: threading.Lock, stops: Sequence[threading.Event]) -> bool:
        """Wait for ``lock`` unless a stop event is set first."""
        while not lock.acquire(timeout=_LOCK_POLL_S):
            if any(event.is_set() for event in stops):
                return False
        return True

    def _plan(
        self,
        required: int,
        keep: frozenset[str],
        busy: frozenset[str] = frozenset(),
        prefer: frozenset[str] = frozenset(),
    ) -> EvictionPlan:
        physical = self._physical_free_bytes()
        return self._pool.plan(
            required,
            budget=self.memory_budget_bytes,
            physical_free=physical,
            keep=keep,
            busy=busy,
            prefer=prefer,
            max_models=self.max_loaded_models,
        )

    @staticmethod
    def _physical_free_bytes() -> int:
        free = memory.free_ram_bytes() + sum(memory.cuda_free_bytes().values())
        return int(free * memory.PHYSICAL_HEADROOM_FRACTION)

    @staticmethod
    def _target_device(required: int) -> str:
        for index, free in sorted(memory.cuda_free_bytes().items()):
            if required <= free * memory.PHYSICAL_HEADROOM_FRACTION:
                return f"cuda:{index}"
        return "cpu"

    def _busy_message(self, spec: ModelSpec, plan: EvictionPlan) -> str:
        return f"waiting for the reply on {', '.join(plan.waiting_for)} to finish"

    def _fit_message(
        self,
        spec: ModelSpec,
        required: int,
        plan: EvictionPlan,
        keep: Sequence[str] | frozenset[str],
        loaded: bool,
    ) -> str:
        """Explain a fit decision; call with the state lock held."""
        if loaded:
            return f"{spec.repo_id} is already loaded."
        if plan.waiting_for:
            return f"{spec.repo_id} fits once the replies on {', '.join(plan.waiting_for)} end."
        if not plan.fits:
            kept = [k for k in keep if k in self._pool]
            kept_text = f" (kept loaded for other conversations: {', '.join(kept)})" if kept else ""
            if plan.limit == "count":
                return (
                    f"{spec.repo_id} cannot load: max_loaded_models={self.max_loaded_models} "
                    f"models are loaded already{kept_text}. Unload a model (chat.unload(...)) "
                    "or raise ChatWidget(max_loaded_models=...)."
                )
            budget = _mib(self.memory_budget_bytes)
            return (
                f"{spec.repo_id} needs about {_mib(required)} of memory but at most "
                f"{_mib(plan.available_bytes)} can be made free (memory budget "
                f"{budget}){kept_text}. Free memory by unloading a model (chat.unload(...)), "
                "pick a smaller model, or raise ChatWidget(memory_budget=...)."
            )
        if plan.evict:
            return f"{spec.repo_id} fits after unloading {', '.join(plan.evict)}."
        return f"{spec.repo_id} fits beside the loaded models."

    def _notify_evicted(self, repo_ids: Sequence[str]) -> None:
        with self._state_lock:
            callbacks = list(self._evict_callbacks)
        for repo_id in repo_ids:
            for callback in callbacks:
                try:
                    callback(repo_id)
                except Exception:
                    logger.exception("on_evict callback failed for %s", repo_id)

    @staticmethod
    def _release_memory() -> None:
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        _trim_malloc()


def _trim_malloc() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and RSS stays high)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        pass


def _stopped_before_start(repo_id: str) -> GenerationResult:
    from chatwidget.engine.types import Usage

    usage = Usage(
        model=repo_id,
        prompt_tokens=0,
        new_tokens=0,
        time_to_first_token_s=None,
        tokens_per_s=None,
        duration_s=0.0,
    )
    return GenerationResult(text="", stopped=True, usage=usage)


__all__ = ["Engine", "LoadedModel"]
