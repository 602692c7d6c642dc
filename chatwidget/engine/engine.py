"""The engine facade: load, warm-pool, generate, unload and free memory.

Threading:

* ``_load_lock`` lets one load run at a time. A load may run while generations run.
* ``_state_lock`` guards the pool and callbacks; it is held only for bookkeeping, never
  while loading or generating, so ``is_loaded``/``loaded_models``/``check_fit`` answer
  at once from the kernel's main thread while the worker thread loads.
* Each loaded model has its own generate lock: two generations on one model run one
  after the other, never interleaved. A generation holds its own reference to the model,
  so unloading or evicting it mid-reply lets the reply finish; the memory is freed when
  the reply ends.

Memory policy (see :mod:`chatwidget.engine.pool` for the eviction rule): models in
``keep`` are never evicted, and a model that cannot fit beside them is refused with
:class:`ModelTooLargeError` before anything is loaded or evicted. ``LoadReport.cold_swap``
is True when the most recently used model had to be unloaded to make room.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chatwidget.catalog import ModelSpec
from chatwidget.engine import memory
from chatwidget.engine.loader import LoadedModel, find_in_cache, load_from_cache
from chatwidget.engine.pool import EvictionPlan, WarmPool
from chatwidget.engine.types import FitReport, GenerationResult, GenerationSettings, LoadReport
from chatwidget.errors import ModelNotDownloadedError, ModelNotLoadedError, ModelTooLargeError

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
    ``device_map`` is passed to ``from_pretrained`` ("auto": accelerate places the model).
    """

    def __init__(
        self,
        *,
        cache_dir: str | Path | None = None,
        memory_budget_bytes: int | None = None,
        device_map: str | dict[str, Any] = "auto",
    ) -> None:
        if memory_budget_bytes is not None and memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        self.cache_dir = cache_dir
        self.device_map = device_map
        self.memory_budget_bytes = (
            memory_budget_bytes
            if memory_budget_bytes is not None
            else memory.default_budget_bytes()
        )
        self._pool = WarmPool()
        self._load_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._evict_callbacks: list[Callable[[str], None]] = []
        self._active_stops: set[threading.Event] = set()

    # --- queries ----------------------------------------------------------------------

    def is_loaded(self, repo_id: str) -> bool:
        """True when the model is in the warm pool ("Ready")."""
        with self._state_lock:
            return repo_id in self._pool

    def loaded_models(self) -> list[str]:
        """Loaded models, least recently used first."""
        with self._state_lock:
            return self._pool.repo_ids()

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
        """Call ``callback(repo_id)`` whenever the warm pool evicts a model to make room."""
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
        """Whether ``spec`` fits while the models in ``keep`` stay loaded. Changes nothing."""
        required = self.estimate_memory(spec)
        device = self._target_device(required)
        with self._state_lock:
            plan = self._plan(required, keep)
            loaded = spec.repo_id in self._pool
            message = self._fit_message(spec, required, plan, keep, loaded)
        fits = loaded or plan.fits
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

    def load(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> LoadReport:
        """Load ``spec`` from the local cache ("Compiling"); one load runs at a time.

        A model already in the pool is only marked most recently used (``already_loaded``).
        Raises ModelNotDownloadedError, ModelTooLargeError (nothing evicted) or ModelLoadError.
        """
        with self._load_lock:
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
                plan = self._plan(required, keep)
                if not plan.fits:
                    raise ModelTooLargeError(self._fit_message(spec, required, plan, keep, False))
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
                self._pool.add(loaded)
            logger.info("loaded %s in %.2fs (%s)", spec.repo_id, duration, _mib(max(0, taken)))
            return LoadReport(
                repo_id=spec.repo_id,
                started_at=started_at,
                duration_s=duration,
                memory_bytes=max(0, taken),
                device_map=dict(loaded.device_map),
                cold_swap=cold_swap,
                evicted=evicted_ids,
                estimated_bytes=required,
            )

    def unload(self, repo_id: str) -> None:
        """Drop the model and free its memory. Unknown ids are ignored.

        A generation in flight on it finishes first on its own reference; the memory is
        released when that reply ends.
        """
        with self._state_lock:
            entry = self._pool.remove(repo_id)
        if entry is None:
            return
        del entry
        self._release_memory()
        logger.info("unloaded %s", repo_id)

    def close(self) -> None:
        """Stop generations in flight, unload every model and free the memory."""
        with self._state_lock:
            for event in self._active_stops:
                event.set()
        with self._load_lock:  # wait for a load in progress, then empty the pool
            with self._state_lock:
                repo_ids = self._pool.repo_ids()
            for repo_id in repo_ids:
                self.unload(repo_id)

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
        from chatwidget.engine.streaming import stream_reply, validate_request

        validate_request(messages, settings)
        with self._state_lock:
            entry = self._pool.get(repo_id)
            if entry is None:
                raise ModelNotLoadedError(
                    f"{repo_id} is not loaded (loaded: {self._pool.repo_ids() or 'none'}); "
                    "load it before generating."
                )
            self._pool.touch(repo_id)
            internal_stop = threading.Event()
            self._active_stops.add(internal_stop)
        stops = [internal_stop] if stop is None else [stop, internal_stop]
        lock = entry.generate_lock
        try:
            if any(e.is_set() for e in stops) or not self._acquire(lock, stops):
                return _stopped_before_start(repo_id)
            try:
                return stream_reply(entry, messages, settings, on_text=on_text, stop_events=stops)
            finally:
                lock.release()
        except BaseException as exc:
            del entry  # an error held by the caller must not keep this model alive
            memory.drop_frame_references(exc)
            raise
        finally:
            with self._state_lock:
                self._active_stops.discard(internal_stop)

    # --- internals --------------------------------------------------------------------

    @staticmethod
    def _acquire(lock: threading.Lock, stops: Sequence[threading.Event]) -> bool:
        """Wait for ``lock`` unless a stop event is set first."""
        while not lock.acquire(timeout=_LOCK_POLL_S):
            if any(event.is_set() for event in stops):
                return False
        return True

    def _plan(self, required: int, keep: Sequence[str]) -> EvictionPlan:
        physical = self._physical_free_bytes()
        return self._pool.plan(
            required, budget=self.memory_budget_bytes, physical_free=physical, keep=set(keep)
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

    def _fit_message(
        self,
        spec: ModelSpec,
        required: int,
        plan: EvictionPlan,
        keep: Sequence[str],
        loaded: bool,
    ) -> str:
        """Explain a fit decision; call with the state lock held."""
        if loaded:
            return f"{spec.repo_id} is already loaded."
        if not plan.fits:
            kept = [k for k in keep if k in self._pool]
            return (
                f"{spec.repo_id} needs about {_mib(required)} but at most "
                f"{_mib(plan.available_bytes)} is available (budget "
                f"{_mib(self.memory_budget_bytes)}, kept loaded: {kept or 'none'}). "
                "Unload a model, pick a smaller one, or raise memory_budget_bytes."
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
