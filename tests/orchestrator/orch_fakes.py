"""Controllable fakes of the downloader and engine ports, for sequencing tests only.

Real-path tests of the same behaviour live in test_orchestrator_integration.py.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chatwidget.catalog import ModelSpec
from chatwidget.downloads.types import DownloadPlan, DownloadProgress
from chatwidget.engine.types import (
    FitReport,
    GenerationResult,
    GenerationSettings,
    LoadReport,
    Usage,
)
from chatwidget.errors import DownloadCanceledError, ModelNotLoadedError, ModelTooLargeError
from chatwidget.orchestrator import Event

Hook = Callable[[], object]
GATE_DEADLINE_S = 30.0


def _wait_gate(gate: threading.Event, cancel: threading.Event | None) -> bool:
    """Wait until ``gate`` opens (True) or ``cancel`` is set (False), with a deadline."""
    deadline = time.monotonic() + GATE_DEADLINE_S
    while not gate.wait(0.005):
        if cancel is not None and cancel.is_set():
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("fake gate was never released: the test forgot to release it")
    return True


class FakeDownloader:
    """Downloads instantly unless gated; scripted failures; hooks run mid-download."""

    def __init__(self, cached: Sequence[str] = ()) -> None:
        self.cached: set[str] = set(cached)
        self.calls: list[str] = []  # repo ids, in the order downloads started
        self.specs: list[ModelSpec] = []
        self.failures: dict[str, list[Exception]] = {}
        self.during: dict[str, list[Hook]] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.canceled: list[str] = []
        self.planned: list[str] = []  # repo ids whose listing was asked for
        self.disk_free: dict[str, int] = {}  # free disk the listing reports, per repo

    def gate(self, repo_id: str) -> threading.Event:
        """Make the next downloads of ``repo_id`` block until the returned event is set."""
        self.entered[repo_id] = threading.Event()
        return self.gates.setdefault(repo_id, threading.Event())

    def fail_next(self, repo_id: str, exc: Exception) -> None:
        self.failures.setdefault(repo_id, []).append(exc)

    def is_downloaded(self, spec: ModelSpec) -> bool:
        return spec.repo_id in self.cached

    def plan(self, spec: ModelSpec) -> DownloadPlan:
        self.planned.append(spec.repo_id)
        free = self.disk_free.get(spec.repo_id, 10**12)
        return DownloadPlan(spec.repo_id, spec.revision, "0" * 40, (), 100, 100, free, 100)

    def download(
        self,
        spec: ModelSpec,
        *,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
    ) -> Path:
        repo_id = spec.repo_id
        self.calls.append(repo_id)
        self.specs.append(spec)
        on_progress(DownloadProgress(repo_id, 0, 100))
        if repo_id in self.entered:
            self.entered[repo_id].set()
        for hook in self.during.pop(repo_id, []):
            hook()
        if repo_id in self.gates and not _wait_gate(self.gates[repo_id], cancel):
            self.canceled.append(repo_id)
            raise DownloadCanceledError(f"Download of {repo_id} was canceled.")
        if cancel.is_set():
            self.canceled.append(repo_id)
            raise DownloadCanceledError(f"Download of {repo_id} was canceled.")
        failures = self.failures.get(repo_id)
        if failures:
            raise failures.pop(0)
        on_progress(DownloadProgress(repo_id, 100, 100, final=True))
        self.cached.add(repo_id)
        return Path("/nonexistent") / repo_id


class FakeEngine:
    """A warm pool with a byte capacity, LRU eviction outside ``keep``, scripted failures."""

    def __init__(self, capacity: int = 10**9, sizes: dict[str, int] | None = None) -> None:
        self.capacity = capacity
        self.sizes = sizes or {}
        self.loaded: OrderedDict[str, int] = OrderedDict()
        self.loads: list[tuple[str, tuple[str, ...]]] = []  # (repo_id, keep)
        self.unloads: list[str] = []
        self.failures: dict[str, list[Exception]] = {}
        self.during: dict[str, list[Hook]] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.generated: list[str] = []
        self._evict_callbacks: list[Callable[[str], None]] = []

    def size(self, repo_id: str) -> int:
        return self.sizes.get(repo_id, 1)

    def gate(self, repo_id: str) -> threading.Event:
        self.entered[repo_id] = threading.Event()
        return self.gates.setdefault(repo_id, threading.Event())

    def fail_next(self, repo_id: str, exc: Exception) -> None:
        self.failures.setdefault(repo_id, []).append(exc)

    def preload(self, repo_id: str) -> None:
        self.loaded[repo_id] = self.size(repo_id)

    def check_fit(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> FitReport:
        required = self.size(spec.repo_id)
        kept = sum(self.loaded.get(r, 0) for r in keep if r != spec.repo_id)
        everything = sum(self.loaded.values())
        return FitReport(
            repo_id=spec.repo_id,
            required_bytes=required,
            available_bytes=self.capacity - kept,
            fits=kept + required <= self.capacity,
            fits_beside_loaded=everything + required <= self.capacity,
            device="cpu",
        )

    def load(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> LoadReport:
        repo_id = spec.repo_id
        self.loads.append((repo_id, tuple(keep)))
        if repo_id in self.entered:
            self.entered[repo_id].set()
        for hook in self.during.pop(repo_id, []):
            hook()
        if repo_id in self.gates:
            _wait_gate(self.gates[repo_id], None)
        failures = self.failures.get(repo_id)
        if failures:
            raise failures.pop(0)
        if not self.check_fit(spec, keep=keep).fits:
            raise ModelTooLargeError(f"{repo_id} does not fit beside {list(keep)}.")
        evicted: list[str] = []
        while sum(self.loaded.values()) + self.size(repo_id) > self.capacity:
            victim = next(r for r in self.loaded if r not in keep)
            self.evict(victim)
            evicted.append(victim)
        self.loaded[repo_id] = self.size(repo_id)
        return LoadReport(
            repo_id=repo_id,
            started_at=0.0,
            duration_s=0.0,
            memory_bytes=self.size(repo_id),
            device_map={"": "cpu"},
            cold_swap=bool(evicted),
            evicted=tuple(evicted),
        )

    def evict(self, repo_id: str) -> None:
        """What the warm pool does: unload and tell the subscribers."""
        del self.loaded[repo_id]
        for callback in self._evict_callbacks:
            callback(repo_id)

    def unload(self, repo_id: str) -> None:
        self.unloads.append(repo_id)
        self.loaded.pop(repo_id, None)

    def is_loaded(self, repo_id: str) -> bool:
        return repo_id in self.loaded

    def on_evict(self, callback: Callable[[str], None]) -> None:
        self._evict_callbacks.append(callback)

    def generate(
        self,
        repo_id: str,
        messages: Sequence[dict[str, str]],
        settings: GenerationSettings,
        *,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerationResult:
        if repo_id not in self.loaded:
            raise ModelNotLoadedError(f"{repo_id} is not loaded.")
        self.generated.append(repo_id)
        text = f"reply from {repo_id} to {messages[-1]['content']}"
        if on_text is not None:
            on_text(text)
        return GenerationResult(
            text=text,
            stopped=False,
            usage=Usage(repo_id, 1, 1, None, None, 0.0),
        )


class Recorder:
    """Subscribes to an orchestrator and keeps every event; lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, kind: type) -> list[Any]:
        with self._changed:
            return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.events), timeout):
                raise AssertionError(f"timed out waiting; events so far: {self.events}")
