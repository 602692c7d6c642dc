"""Let one orchestrator drive local and remote models through its two ports.

:class:`RoutingEngine` and :class:`RoutingDownloader` have the shapes of ``EnginePort`` and
``DownloaderPort`` and dispatch on the model key: ``"server:model id"`` goes to the
:class:`~chatwidget.engine.remote.RemoteEngine`, a Hub repo id to the local engine and
downloader. A remote model needs no download, so it always counts as downloaded; the
orchestrator then takes it straight from Queued to Connecting (the remote ``load``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from chatwidget.catalog import ModelSpec, split_remote_key
from chatwidget.downloads.types import DownloadPlan, DownloadProgress
from chatwidget.engine.remote.engine import RemoteEngine
from chatwidget.engine.types import (
    FitReport,
    GenerationResult,
    GenerationSettings,
    LoadReport,
    Names,
    resolve_names,
)
from chatwidget.orchestrator.ports import DownloaderPort, EnginePort, Message, Token


def is_remote(key: str) -> bool:
    """Whether ``key`` names a model on a server (``"server:model id"``)."""
    return split_remote_key(key) is not None


class RoutingEngine:
    """``EnginePort`` over a local engine and a remote one, chosen by the model key."""

    def __init__(self, local: EnginePort, remote: RemoteEngine) -> None:
        self.local = local
        self.remote = remote

    def __repr__(self) -> str:
        return f"RoutingEngine(local={self.local!r}, remote={self.remote!r})"

    def _for(self, key: str) -> EnginePort | RemoteEngine:
        return self.remote if is_remote(key) else self.local

    def check_fit(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> FitReport:
        if spec.is_remote:
            return self.remote.check_fit(spec, keep=keep)
        return self.local.check_fit(spec, keep=_local(keep)())

    def load(
        self,
        spec: ModelSpec,
        *,
        keep: Names = (),
        busy: Names = (),
        prefer: Names = (),
        cancel: threading.Event | None = None,
    ) -> LoadReport:
        """Load locally, or connect; ``cancel`` (if the caller has one) interrupts Connecting.

        The local engine gets only local keys in ``keep``/``busy``/``prefer``, still evaluated
        when it decides (they may be functions)."""
        if spec.is_remote:
            return self.remote.load(spec, cancel=cancel)
        return self.local.load(
            spec, keep=_local(keep), busy=_local(busy), prefer=_local(prefer), cancel=cancel
        )

    def unload(self, repo_id: str, *, if_idle: bool = False, busy: Names = ()) -> int:
        """Unload (or disconnect); returns the bytes freed (a remote model frees none here)."""
        if is_remote(repo_id):
            self.remote.unload(repo_id)
            return 0
        return self.local.unload(repo_id, if_idle=if_idle, busy=_local(busy))

    def is_loaded(self, repo_id: str) -> bool:
        return self._for(repo_id).is_loaded(repo_id)

    def on_evict(self, callback: Callable[[str], None]) -> None:
        self.local.on_evict(callback)
        self.remote.on_evict(callback)

    def generate(
        self,
        repo_id: str,
        messages: Sequence[Message],
        settings: GenerationSettings,
        *,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerationResult:
        return self._for(repo_id).generate(repo_id, messages, settings, on_text=on_text, stop=stop)


class RoutingDownloader:
    """``DownloaderPort`` that lets remote models through: they need no download."""

    def __init__(self, local: DownloaderPort) -> None:
        self.local = local

    def __repr__(self) -> str:
        return f"RoutingDownloader(local={self.local!r})"

    def is_downloaded(self, spec: ModelSpec) -> bool:
        return True if spec.is_remote else self.local.is_downloaded(spec)

    def plan(self, spec: ModelSpec, *, token: Token = None) -> DownloadPlan:
        if spec.is_remote:
            return DownloadPlan(spec.repo_id, spec.revision, "", (), 0, 0, 0, 0)
        return self.local.plan(spec, token=token)

    def download(
        self,
        spec: ModelSpec,
        *,
        on_progress: Callable[[DownloadProgress], None],
        cancel: threading.Event,
        token: Token = None,
    ) -> Path:
        if spec.is_remote:
            raise ValueError(f"{spec.repo_id} is served remotely: there is nothing to download.")
        return self.local.download(spec, on_progress=on_progress, cancel=cancel, token=token)

    def hold(self) -> Callable[[], None]:
        return self.local.hold()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self.local.wait_stopped(timeout)


def _local(names: Names) -> Callable[[], tuple[str, ...]]:
    """The local keys of ``names``, when asked (so a function stays live)."""
    return lambda: tuple(k for k in resolve_names(names) if not is_remote(k))
