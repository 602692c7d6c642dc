"""The offline mode of the demos: tiny models served by the bundled local hub.

With ``CHATWIDGET_OFFLINE=1`` the notebooks call :func:`widget_kwargs` instead of using
the real Hugging Face Hub. The models are tiny Llama-architecture models with random
weights and a real tokenizer and chat template: they load and stream like real models,
but their replies are gibberish.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from chatwidget.catalog import ModelSpec

#: The demo catalog served offline (built by ``chatwidget.testing.models.build_demo_hub``).
DEMO_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("demo/tiny-chat", name="Tiny chat (offline demo)", params="tiny"),
    ModelSpec("demo/tiny-chat-b", name="Tiny chat B (offline demo)", params="tiny"),
    ModelSpec("demo/small-chat", name="Small chat (offline demo)", params="small"),
)
#: Bytes per second the demo hub sends, so downloads take a few visible seconds.
DEFAULT_RATE = 8_000_000

_lock = threading.Lock()
_hub: dict[str, str] = {}  # the URL of the hub this process started
_cache: dict[str, Path] = {}


def enabled() -> bool:
    """True when ``CHATWIDGET_OFFLINE=1``."""
    return os.environ.get("CHATWIDGET_OFFLINE", "") == "1"


def demo_cache_root() -> Path:
    """Where the demo models are built once (``$CHATWIDGET_DEMO_CACHE`` overrides)."""
    env = os.environ.get("CHATWIDGET_DEMO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "chatwidget" / "demo-hub"


def stop_tree(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """Terminate a process and everything it started; kill what does not exit in time."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def hub_url(rate: int | None = DEFAULT_RATE) -> str:
    """The local hub's URL: ``$CHATWIDGET_HUB_URL`` (set by ``chatwidget demo``), or a hub
    started now in a child process over the demo models (stopped when Python exits)."""
    env = os.environ.get("CHATWIDGET_HUB_URL")
    if env:
        return env.rstrip("/")
    with _lock:
        if "demo" not in _hub:
            from chatwidget.testing.hub import run_hub_process
            from chatwidget.testing.models import build_demo_hub

            root = demo_cache_root()
            build_demo_hub(root)
            stack = contextlib.ExitStack()
            _hub["demo"] = stack.enter_context(run_hub_process(root, rate=rate))
            atexit.register(stack.close)
        return _hub["demo"]


def demo_cache_dir() -> Path:
    """A fresh HF cache for this process's offline demo, removed when Python exits.

    The demo models are fakes: they stay out of your real Hugging Face cache, and every run
    starts with nothing downloaded, so the demo (and its checked outputs) always look the same.
    """
    with _lock:
        if "cache" not in _cache:
            folder = Path(tempfile.mkdtemp(prefix="chatwidget-demo-cache-"))
            atexit.register(shutil.rmtree, folder, True)
            _cache["cache"] = folder
        return _cache["cache"]


def widget_kwargs(rate: int | None = DEFAULT_RATE) -> dict[str, Any]:
    """``ChatWidget`` arguments for the offline demo: the demo catalog, the local hub and a
    throwaway cache."""
    return {"models": list(DEMO_MODELS), "endpoint": hub_url(rate), "cache_dir": demo_cache_dir()}
