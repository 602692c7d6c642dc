"""The boundaries the orchestrator drives: a downloader and an engine.

The real ones are :class:`chatwidget.downloads.Downloader` and
:class:`chatwidget.engine.Engine`; sequencing tests pass fakes with the same shape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from chatwidget.catalog import ModelSpec
from chatwidget.downloads.types import DownloadPlan, DownloadProgress
from chatwidget.engine.types import FitReport, GenerationResult, GenerationSettings, LoadReport

Message = dict[str, str]  # {"role": ..., "content": ...}


class DownloaderPort(Protocol):
    def is_downloaded(self, spec: ModelSpec) -> bool:
        """True when every file the model needs is in the cache (no network)."""
        ...

    def plan(self, spec: ModelSpec) -> DownloadPlan:
        """List what a download would fetch; raises a classified DownloadError."""
        ...

    def download(
        self,
        spec: ModelSpec,
        *,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
    ) -> Path:
        """Download into the HF cache and return the snapshot folder. Blocks.

        Setting ``cancel`` stops it within 0.5 s and raises DownloadCanceledError.
        """
        ...


class EnginePort(Protocol):
    def check_fit(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> FitReport:
        """Whether ``spec`` fits in memory while the models in ``keep`` stay loaded."""
        ...

    def load(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> LoadReport:
        """Load from the local cache only ("Compiling"). Never evicts models in ``keep``."""
        ...

    def unload(self, repo_id: str) -> None:
        """Drop the model and free its memory. Unknown ids are ignored."""
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
        """Stream a reply on a loaded model. Setting ``stop`` ends it within one step."""
        ...
