"""One shared download queue and model pool per (endpoint, cache) in a kernel.

Every :class:`~chatwidget.widget.ChatWidget` in a kernel that points at the same hub
endpoint and HF cache shares one :class:`Runtime`, so a model is never downloaded or
loaded twice. The runtime is reference-counted: the last widget to close it stops the
queue worker, kills any download child and unloads every model. ``atexit`` closes what
is left when the kernel shuts down.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from chatwidget.downloads import Downloader
from chatwidget.engine import Engine
from chatwidget.engine.remote import RemoteEngine, RoutingDownloader, RoutingEngine
from chatwidget.orchestrator import Orchestrator

log = logging.getLogger("chatwidget.runtime")

_lock = threading.Lock()
_runtimes: dict[tuple[str, str], Runtime] = {}


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
    users: int = 0
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def close(self) -> None:
        """Stop the queue, kill any download, unload every model. Idempotent."""
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
    *, endpoint: str | None, cache_dir: str | Path | None, token: str | bool | None
) -> Runtime:
    """Get (or create) the runtime for this endpoint and cache and take a reference."""
    ep = (endpoint or default_endpoint()).rstrip("/")
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir().resolve()
    key = (ep, str(cache))
    with _lock:
        rt = _runtimes.get(key)
        if rt is None or rt.closed:
            # prestart: keep one idle download process ready, so a download starts without
            # paying for a new interpreter (about 1 s on a small machine).
            downloader = Downloader(endpoint=ep, cache_dir=cache, token=token, prestart=True)
            engine = Engine(cache_dir=cache)
            remote = RemoteEngine()
            orchestrator = Orchestrator(
                RoutingDownloader(downloader), RoutingEngine(engine, remote)
            )
            rt = Runtime(key, downloader, engine, orchestrator, remote)
            _runtimes[key] = rt
        elif token is not None:
            rt.downloader.set_token(token)
        rt.users += 1
        return rt


def release(runtime: Runtime) -> None:
    """Drop a reference; the last one closes the runtime."""
    with _lock:
        runtime.users -= 1
        last = runtime.users <= 0
        if last:
            _runtimes.pop(runtime.key, None)
    if last:
        runtime.close()


@atexit.register
def close_all() -> None:
    """Close every runtime (kernel shutdown)."""
    with _lock:
        runtimes = list(_runtimes.values())
        _runtimes.clear()
    for rt in runtimes:
        rt.close()
