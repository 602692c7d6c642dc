"""Fit labels for the model selector: one verdict per precision option, before download.

:class:`FitEstimates` computes, on its own thread, a :class:`~chatwidget.fit.FitTable` for
each model it is asked about: from the cache when the model is downloaded (no network),
else from the hub (``config.json`` and the safetensors headers, read with HTTP Range
requests by the download plan: no weights are fetched). The kernel's main thread never
waits for it; each finished table calls ``on_change`` and the publisher renders it into the
model's row (:func:`fit_info`).

Precision options map to a spec with :func:`spec_for_option` and back with
:func:`option_of`: ``auto``/``bfloat16``/``float16``/``float32`` set ``dtype``; ``8bit`` and
``4bit`` set ``quantization`` (dtype ``auto``).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.fit import FitTable
from chatwidget.widget.protocol import FitInfo, FitOption

if TYPE_CHECKING:
    from chatwidget.runtime import Runtime

log = logging.getLogger("chatwidget.widget.fit")

#: Options with a quantization (the rest are dtypes).
QUANTIZED = ("8bit", "4bit")


def option_of(spec: ModelSpec) -> str:
    """The precision option a spec loads: its quantization, else its dtype."""
    return spec.quantization or spec.dtype


def spec_for_option(spec: ModelSpec, option: str) -> ModelSpec:
    """``spec`` with precision ``option``; ValueError naming the valid options otherwise."""
    if option in QUANTIZED:
        return dataclasses.replace(spec, dtype="auto", quantization=option)
    if option in fit.DTYPE_OPTIONS:
        return dataclasses.replace(spec, dtype=option, quantization=None)
    raise ValueError(
        f"Unknown precision {option!r}: pick one of {', '.join((*fit.DTYPE_OPTIONS, *QUANTIZED))}."
    )


def fit_info(table: FitTable) -> FitInfo:
    """A table as the row shows it: one entry per option, and the absent ones with why."""
    options: list[FitOption] = [
        {
            "option": row.option,
            "verdict": row.verdict.value,
            "label": row.label,
            "required_bytes": row.required_bytes,
            "budget_bytes": row.budget_bytes,
            "note": row.note,
        }
        for row in table.rows
    ]
    return {
        "status": "ready",
        "context_tokens": table.context_tokens,
        "source": table.source,
        "options": options,
        "absent": [{"option": a.option, "reason": a.reason} for a in table.absent],
        "note": "; ".join(table.notes) or None,
    }


def _pending() -> FitInfo:
    return {
        "status": "pending",
        "context_tokens": 0,
        "source": "",
        "options": [],
        "absent": [],
        "note": "Estimating…",
    }


def _unavailable(why: str) -> FitInfo:
    return {
        "status": "unavailable",
        "context_tokens": 0,
        "source": "",
        "options": [],
        "absent": [],
        "note": why,
    }


def _why(exc: Exception) -> str:
    """A short reason for a missing estimate (the row has the full error)."""
    if getattr(exc, "kind", None) == "gated":
        return "No estimate until a token is added: the repo is gated."
    text = str(exc) or type(exc).__name__
    return f"No estimate: {text if len(text) <= 160 else text[:157] + '…'}"


class FitEstimates:
    """Fit tables per model, computed off the caller's thread.

    ``request(spec)`` queues ``spec`` once (again only with ``force``); ``info(repo_id)``
    is what its row shows now (None: never asked). ``table(repo_id)`` is the last table.
    ``group`` is whose token the hub requests use. ``close()`` stops the thread.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        group: str | None,
        cache_dir: Path | None,
        on_change: Callable[[], None],
    ) -> None:
        self._runtime = runtime
        self._group = group
        self._cache_dir = cache_dir
        self._on_change = on_change
        self._lock = threading.Lock()
        self._infos: dict[str, FitInfo] = {}
        self._tables: dict[str, FitTable] = {}
        self._done: dict[str, threading.Event] = {}
        self._queue: queue.SimpleQueue[ModelSpec | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def request(self, spec: ModelSpec, *, force: bool = False) -> None:
        """Estimate ``spec`` soon (remote models get no estimate)."""
        if spec.is_remote:
            return
        with self._lock:
            if self._closed.is_set() or (spec.repo_id in self._infos and not force):
                return
            self._infos[spec.repo_id] = _pending()
            self._done[spec.repo_id] = threading.Event()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chatwidget-fit", daemon=True
                )
                self._thread.start()
        self._queue.put(spec)
        self._on_change()

    def retry_unavailable(self, specs: list[ModelSpec]) -> None:
        """Estimate again those of ``specs`` that had no estimate (e.g. after a token)."""
        for spec in specs:
            info = self.info(spec.repo_id)
            if info is not None and info["status"] == "unavailable":
                self.request(spec, force=True)

    def info(self, repo_id: str) -> FitInfo | None:
        with self._lock:
            return self._infos.get(repo_id)

    def table(self, repo_id: str) -> FitTable | None:
        with self._lock:
            return self._tables.get(repo_id)

    def wait(self, repo_id: str, timeout: float | None = None) -> bool:
        """Wait until ``repo_id``'s estimate is done (ready or unavailable)."""
        with self._lock:
            done = self._done.get(repo_id)
        return done is not None and done.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        self._queue.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    def _run(self) -> None:
        while not self._closed.is_set():
            spec = self._queue.get()
            if spec is None:
                return
            try:
                table = self._estimate(spec)
                info = fit_info(table)
            except Exception as exc:  # shown in the row; never a crash of the thread
                log.info("No fit estimate for %s: %s", spec.repo_id, exc)
                table, info = None, _unavailable(_why(exc))
            with self._lock:
                if table is not None:
                    self._tables[spec.repo_id] = table
                self._infos[spec.repo_id] = info
                done = self._done.get(spec.repo_id)
            if done is not None:
                done.set()
            if not self._closed.is_set():
                self._on_change()

    def _estimate(self, spec: ModelSpec) -> FitTable:
        estimate = fit.estimate_cached(spec, self._cache_dir)
        if estimate is None:
            plan = self._runtime.plan(spec, group=self._group)  # Range reads, no weights
            estimate = plan.fit
        if estimate is None:
            raise ValueError("the hub did not give the model's config and weight headers")
        return fit.fit_table(estimate, budget_bytes=self._runtime.engine.memory_budget_bytes)
