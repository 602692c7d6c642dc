"""Controllable fakes of the downloader and engine ports, for sequencing tests only.

Real-path tests of the same behaviour live in test_orchestrator_integration.py and
test_lifecycle_real.py.

Both fakes can run hooks at named points (``fake.at(point, repo_id, hook)``), so a test
steps a request in at exactly the moment the orchestrator has released its lock to call
the fake: points are ``"is_downloaded"``, ``"plan"``, ``"download"``, ``"check_fit"``,
``"load"`` (before the fake engine decides what to evict), ``"loaded"`` (after it loaded),
``"unload"`` (before it checks ``if_idle``), ``"generate_start"`` (before a reply pins its
model) and ``"generate"`` (inside a reply, while the model is pinned).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict
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
    Names,
    Usage,
    resolve_names,
)
from chatwidget.errors import (
    DownloadCanceledError,
    ModelBusyError,
    ModelNotLoadedError,
    ModelTooLargeError,
)
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


class _Hooks:
    def __init__(self) -> None:
        self._hooks: dict[tuple[str, str], list[Hook]] = defaultdict(list)

    def at(self, point: str, repo_id: str, hook: Hook) -> None:
        """Run ``hook`` once, the next time the fake reaches ``point`` for ``repo_id``."""
        self._hooks[(point, repo_id)].append(hook)

    def run(self, point: str, repo_id: str) -> None:
        for hook in self._hooks.pop((point, repo_id), []):
            hook()


class FakeDownloader(_Hooks):
    """Downloads instantly unless gated; scripted failures; hooks run mid-download."""

    def __init__(self, cached: Sequence[str] = ()) -> None:
        super().__init__()
        self.cached: set[str] = set(cached)
        self.calls: list[str] = []  # repo ids, in the order downloads started
        self.specs: list[ModelSpec] = []
        self.tokens: list[tuple[str, object]] = []  # (repo id, token) per plan and download
        self.failures: dict[str, list[Exception]] = {}
        self.during: dict[str, list[Hook]] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.canceled: list[str] = []
        self.planned: list[str] = []  # repo ids whose listing was asked for
        self.disk_free: dict[str, int] = {}  # free disk the listing reports, per repo
        self.holds = 0
        self.held = 0

    def gate(self, repo_id: str) -> threading.Event:
        """Make the next downloads of ``repo_id`` block until the returned event is set."""
        self.entered[repo_id] = threading.Event()
        return self.gates.setdefault(repo_id, threading.Event())

    def fail_next(self, repo_id: str, exc: Exception) -> None:
        self.failures.setdefault(repo_id, []).append(exc)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return True  # nothing to reap: a fake download has no process

    def hold(self) -> Callable[[], None]:
        """Counts the holds a reply takes (``held`` now, ``holds`` in all)."""
        self.holds += 1
        self.held += 1
        released = [False]

        def release() -> None:
            if not released[0]:
                released[0] = True
                self.held -= 1

        return release

    def is_downloaded(self, spec: ModelSpec) -> bool:
        self.run("is_downloaded", spec.repo_id)
        return spec.repo_id in self.cached

    def plan(self, spec: ModelSpec, *, token: object = None) -> DownloadPlan:
        self.planned.append(spec.repo_id)
        self.tokens.append((spec.repo_id, token))
        self.run("plan", spec.repo_id)
        free = self.disk_free.get(spec.repo_id, 10**12)
        return DownloadPlan(spec.repo_id, spec.revision, "0" * 40, (), 100, 100, free, 100)

    def download(
        self,
        spec: ModelSpec,
        *,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
        token: object = None,
    ) -> Path:
        repo_id = spec.repo_id
        self.calls.append(repo_id)
        self.specs.append(spec)
        self.tokens.append((repo_id, token))
        on_progress(DownloadProgress(repo_id, 0, 100))
        if repo_id in self.entered:
            self.entered[repo_id].set()
        for hook in self.during.pop(repo_id, []):
            hook()
        self.run("download", repo_id)
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


class FakeEngine(_Hooks):
    """A warm pool with a byte capacity and a model cap, as the real engine decides it:
    LRU eviction outside ``keep`` and ``busy`` (models in ``prefer`` last), never a model a
    reply is using (ModelBusyError instead), scripted failures."""

    def __init__(
        self,
        capacity: int = 10**9,
        sizes: dict[str, int] | None = None,
        max_models: int | None = None,
    ) -> None:
        super().__init__()
        self.capacity = capacity
        self.max_models = max_models
        self.sizes = sizes or {}
        self.loaded: OrderedDict[str, int] = OrderedDict()
        self.loads: list[tuple[str, tuple[str, ...]]] = []  # (repo_id, keep when it decided)
        self.decisions: list[dict[str, Any]] = []  # keep/busy/prefer/evicted per load
        self.unloads: list[str] = []
        self.failures: dict[str, list[Exception]] = {}
        self.during: dict[str, list[Hook]] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.generated: list[str] = []
        self.generating: dict[str, int] = {}  # replies in flight per model (pinned)
        self.reply_gates: dict[str, threading.Event] = {}
        self.reply_entered: dict[str, threading.Event] = {}
        self.peak_bytes = 0  # the most ever resident at once
        self._lock = threading.Lock()
        self._evict_callbacks: list[Callable[[str], None]] = []

    def size(self, repo_id: str) -> int:
        return self.sizes.get(repo_id, 1)

    def gate(self, repo_id: str) -> threading.Event:
        self.entered[repo_id] = threading.Event()
        return self.gates.setdefault(repo_id, threading.Event())

    def hold_replies(self, repo_id: str) -> threading.Event:
        """Make replies on ``repo_id`` block mid-way until the returned event is set."""
        self.reply_entered[repo_id] = threading.Event()
        return self.reply_gates.setdefault(repo_id, threading.Event())

    def fail_next(self, repo_id: str, exc: Exception) -> None:
        self.failures.setdefault(repo_id, []).append(exc)

    def preload(self, repo_id: str) -> None:
        self.loaded[repo_id] = self.size(repo_id)

    def resident(self) -> int:
        return sum(self.loaded.values())

    def check_fit(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> FitReport:
        self.run("check_fit", spec.repo_id)
        required = self.size(spec.repo_id)
        kept = sum(self.loaded.get(r, 0) for r in keep if r != spec.repo_id)
        everything = self.resident()
        return FitReport(
            repo_id=spec.repo_id,
            required_bytes=required,
            available_bytes=self.capacity - kept,
            fits=kept + required <= self.capacity,
            fits_beside_loaded=everything + required <= self.capacity,
            device="cpu",
        )

    def _plan(
        self, repo_id: str, keep: frozenset[str], busy: frozenset[str], prefer: frozenset[str]
    ) -> tuple[list[str], tuple[str, ...]]:
        """(models to evict, models to wait for); raises ModelTooLargeError."""
        required = self.size(repo_id)
        pinned = {r for r in self.loaded if r not in keep and (r in busy or self.generating.get(r))}
        candidates = [r for r in self.loaded if r not in keep and r not in pinned]
        order = [r for r in candidates if r not in prefer] + [r for r in candidates if r in prefer]
        fixed = sum(self.loaded[r] for r in self.loaded if r in keep or r in pinned)
        fixed_count = sum(1 for r in self.loaded if r in keep or r in pinned)
        fits_memory = fixed + required <= self.capacity
        fits_count = self.max_models is None or fixed_count + 1 <= self.max_models
        if not (fits_memory and fits_count):
            kept_only = sum(self.loaded[r] for r in self.loaded if r in keep)
            kept_count = sum(1 for r in self.loaded if r in keep)
            later = kept_only + required <= self.capacity and (
                self.max_models is None or kept_count + 1 <= self.max_models
            )
            if pinned and later:
                return [], tuple(sorted(pinned))
            raise ModelTooLargeError(f"{repo_id} does not fit beside {sorted(keep)}.")
        evict: list[str] = []
        used, count = self.resident(), len(self.loaded)
        for victim in order:
            if used + required <= self.capacity and (
                self.max_models is None or count + 1 <= self.max_models
            ):
                break
            evict.append(victim)
            used -= self.loaded[victim]
            count -= 1
        return evict, ()

    def load(
        self,
        spec: ModelSpec,
        *,
        keep: Names = (),
        busy: Names = (),
        prefer: Names = (),
        cancel: threading.Event | None = None,
    ) -> LoadReport:
        repo_id = spec.repo_id
        self.run("load", repo_id)
        if repo_id in self.entered:
            self.entered[repo_id].set()
        for hook in self.during.pop(repo_id, []):
            hook()
        kept, busy_now, preferred = resolve_names(keep), resolve_names(busy), resolve_names(prefer)
        self.loads.append((repo_id, tuple(sorted(kept))))
        if repo_id in self.loaded:
            self.loaded.move_to_end(repo_id)
            return self._report(repo_id, ())
        evict, waiting = self._plan(repo_id, kept, busy_now, preferred)
        self.decisions.append(
            {
                "repo_id": repo_id,
                "keep": kept,
                "busy": busy_now,
                "prefer": preferred,
                "evict": tuple(evict),
                "waiting_for": waiting,
            }
        )
        if waiting:
            raise ModelBusyError(f"waiting for the reply on {', '.join(waiting)}", waiting)
        for victim in evict:
            self.evict(victim)
        if repo_id in self.gates:
            _wait_gate(self.gates[repo_id], None)
        failures = self.failures.get(repo_id)
        if failures:
            raise failures.pop(0)
        self.loaded[repo_id] = self.size(repo_id)
        self.peak_bytes = max(self.peak_bytes, self.resident())
        self.run("loaded", repo_id)
        return self._report(repo_id, tuple(evict))

    def _report(self, repo_id: str, evicted: tuple[str, ...]) -> LoadReport:
        return LoadReport(
            repo_id=repo_id,
            started_at=0.0,
            duration_s=0.0,
            memory_bytes=self.size(repo_id),
            device_map={"": "cpu"},
            cold_swap=bool(evicted),
            evicted=evicted,
            estimated_bytes=self.size(repo_id),
        )

    def evict(self, repo_id: str) -> None:
        """What the warm pool does: unload and tell the subscribers."""
        del self.loaded[repo_id]
        for callback in self._evict_callbacks:
            callback(repo_id)

    def unload(self, repo_id: str, *, if_idle: bool = False, busy: Names = ()) -> int:
        self.run("unload", repo_id)
        if if_idle and (self.generating.get(repo_id) or repo_id in resolve_names(busy)):
            raise ModelBusyError(f"{repo_id} is answering right now.", (repo_id,))
        self.unloads.append(repo_id)
        return self.loaded.pop(repo_id, 0)

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
        self.run("generate_start", repo_id)
        with self._lock:
            if repo_id not in self.loaded:
                raise ModelNotLoadedError(f"{repo_id} is not loaded.")
            self.generating[repo_id] = self.generating.get(repo_id, 0) + 1
        try:
            self.generated.append(repo_id)
            self.run("generate", repo_id)
            if repo_id in self.reply_entered:
                self.reply_entered[repo_id].set()
            gate = self.reply_gates.get(repo_id)
            stopped = False
            if gate is not None:
                stopped = not _wait_gate(gate, stop)
            text = f"reply from {repo_id} to {messages[-1]['content']}"
            if on_text is not None:
                on_text(text)
            return GenerationResult(
                text=text,
                stopped=stopped,
                usage=Usage(repo_id, 1, 1, None, None, 0.0),
            )
        finally:
            with self._lock:
                self.generating[repo_id] -= 1
                if not self.generating[repo_id]:
                    del self.generating[repo_id]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
