"""The boundaries the orchestrator drives: a downloader and an engine.

The real ones are :class:`chatwidget.downloads.Downloader` and
:class:`chatwidget.engine.Engine`; sequencing tests pass fakes with the same shape.

Lock discipline: the orchestrator never calls a port while holding its state lock. An
engine may call the functions it is given as ``keep``/``busy``/``prefer`` while holding its
own lock (they take the orchestrator's lock briefly and call nothing back), and calls
``on_evict`` callbacks with none of its bookkeeping locks held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from chatwidget.catalog import ModelSpec
from chatwidget.downloads.types import DownloadPlan, DownloadProgress
from chatwidget.engine.types import (
    FitReport,
    GenerationResult,
    GenerationSettings,
    LoadReport,
    Names,
)

Message = dict[str, str]  # {"role": ..., "content": ...}
Token = str | bool | None  # a Hugging Face token; None: the downloader's default


class DownloaderPort(Protocol):
    def is_downloaded(self, spec: ModelSpec) -> bool:
        """True when every file the model needs is in the cache (no network)."""
        ...

    def plan(self, spec: ModelSpec, *, token: Token = None) -> DownloadPlan:
        """List what a download would fetch; raises a classified DownloadError."""
        ...

    def download(
        self,
        spec: ModelSpec,
        *,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
        token: Token = None,
    ) -> Path:
        """Download into the HF cache and return the snapshot folder. Blocks.

        Setting ``cancel`` stops it within 0.5 s and raises DownloadCanceledError.
        ``token`` is the requesting consumer's token (None: the downloader's default).
        """
        ...

    def hold(self) -> Callable[[], None]:
        """Pause running downloads while a reply starts; returns the (idempotent) release."""
        ...

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until stopped downloads are fully cleaned up (their processes gone, partial
        files removed); True when they are."""
        ...


class EnginePort(Protocol):
    def check_fit(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> FitReport:
        """Whether ``spec`` fits in memory while the models in ``keep`` stay loaded."""
        ...

    def load(
        self,
        spec: ModelSpec,
        *,
        keep: Names = (),
        busy: Names = (),
        prefer: Names = (),
        cancel: threading.Event | None = None,
    ) -> LoadReport:
        """Load from the local cache only ("Compiling"), or connect ("Connecting").

        Never evicts models in ``keep`` (no room beside them: ModelTooLargeError) nor in
        ``busy`` or in use by a reply (room only once they are free: ModelBusyError, with
        ``waiting_for``, and nothing evicted); evicts models in ``prefer`` last. Each may be
        a function, evaluated when the engine decides. ``cancel`` ends a load that can be
        interrupted (connecting); a local load runs to its end and the caller discards it.
        """
        ...

    def unload(self, repo_id: str, *, if_idle: bool = False, busy: Names = ()) -> int:
        """Drop the model and free its memory; returns the bytes freed (0 if not loaded).
        With ``if_idle``, a model a reply is using or named in ``busy`` (may be a function,
        evaluated when the engine decides) is kept and ModelBusyError raised."""
        ...

    def is_loaded(self, repo_id: str) -> bool: ...

    def on_evict(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(repo_id)`` whenever the warm pool evicts a model."""
        ...

    def generate(
        self,
        repo_id: str,
        messages: Sequence[Message],
        settings: GenerationSettings,
        *,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerationResult:
        """Stream a reply on a loaded model. Setting ``stop`` ends it within one step.
        Raises ModelNotLoadedError when the model is not loaded (any more)."""
        ...
