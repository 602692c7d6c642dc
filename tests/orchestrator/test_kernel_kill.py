"""A kernel killed with SIGKILL (no atexit, no finally) mid-download, mid-load and mid-reply.

The kernel is a real process running a headless ChatWidget on the real stack. After the kill:
no child process of it is left running, and the partial files its download left are removed
when the next runtime starts on that cache (only because their lock is free now).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chatwidget import runtime
from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
WAIT_S = 120.0

KERNEL = textwrap.dedent(
    """
    import json, os, sys, threading
    import psutil
    from chatwidget import ChatWidget
    from chatwidget.orchestrator import ModelState, ProgressChanged

    endpoint, cache, repo, mode = sys.argv[1:5]
    started = threading.Event()
    if mode == "load":
        from chatwidget.engine import engine as engine_module

        def slow(cached, **kwargs):  # a big model, still in from_pretrained
            started.set()
            threading.Event().wait()
        engine_module.load_from_cache = slow

    chat = ChatWidget(models=[repo], endpoint=endpoint, cache_dir=cache)
    chat.set_settings(max_new_tokens=32768)
    if mode == "download":
        chat.subscribe(
            lambda e: isinstance(e, ProgressChanged) and e.progress.bytes_done > 2_000_000
            and started.set()
        )
    chat.select_model(repo)
    if mode == "reply":
        if not chat.wait_until_idle(120):
            sys.exit("the model did not load")
        handle = chat.send("Tell me a very long story.")
        if not handle.wait_for_first_token(120):
            sys.exit("no first token")
        started.set()
    if not started.wait(120):
        sys.exit(f"{mode} did not start")
    kids = [p.pid for p in psutil.Process().children(recursive=True)]
    print(json.dumps({"pid": os.getpid(), "children": kids}), flush=True)
    threading.Event().wait()  # until killed
    """
)


class Kernel:
    def __init__(self, hub: LocalHub, cache: Path, repo_id: str, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", KERNEL, hub.url, str(cache), repo_id, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline() if self.proc.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(WAIT_S)
        if not line or not line[0].strip():
            self.proc.kill()
            _out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"the kernel did not get to {mode}:\n{err[-3000:]}")
        info = json.loads(line[0])
        self.children = [psutil.Process(pid) for pid in info["children"] if psutil.pid_exists(pid)]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WAIT_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def left_running(self) -> list[psutil.Process]:
        _gone, alive = psutil.wait_procs(self.children, timeout=20)
        return alive


@pytest.fixture
def kernels() -> Iterator[list[Kernel]]:
    made: list[Kernel] = []
    yield made
    for kernel in made:
        if kernel.proc.poll() is None:
            kernel.kill()
        for child in kernel.children:
            if child.is_running():
                child.kill()


def test_sigkill_mid_download_leaves_no_process_and_its_partial_file_is_cleaned_next_time(
    local_hub: LocalHub, small_repo: str, tmp_path: Path, kernels: list[Kernel]
) -> None:
    cache = tmp_path / "cache"
    local_hub.rate = 1_000_000  # ~28 s for the whole model: it is mid-download when killed
    kernel = Kernel(local_hub, cache, small_repo, "download")
    kernels.append(kernel)
    assert kernel.children, "a download process should be running"
    kernel.kill()
    assert kernel.left_running() == []
    partial = sorted(cache.rglob("*.incomplete"))
    assert partial, "a killed download leaves its partial file (huggingface_hub cannot clean)"
    local_hub.rate = None
    rt = runtime.acquire(endpoint=local_hub.url, cache_dir=cache)  # the next kernel starts
    try:
        assert sorted(cache.rglob("*.incomplete")) == []
        rt.orchestrator.open_conversation("c1", model=small_repo)
        assert rt.orchestrator.wait_until_idle(WAIT_S)
        assert rt.orchestrator.active_model("c1") == small_repo
    finally:
        runtime.release(rt)


def test_sigkill_mid_load_leaves_no_process(
    local_hub: LocalHub, tmp_path: Path, kernels: list[Kernel]
) -> None:
    kernel = Kernel(local_hub, tmp_path / "cache", TINY, "load")
    kernels.append(kernel)
    assert kernel.children, "the prestarted download process should be running"
    kernel.kill()
    assert kernel.left_running() == []


def test_sigkill_mid_reply_leaves_no_process(
    local_hub: LocalHub, tmp_path: Path, kernels: list[Kernel]
) -> None:
    kernel = Kernel(local_hub, tmp_path / "cache", TINY, "reply")
    kernels.append(kernel)
    assert kernel.children
    kernel.kill()
    assert kernel.left_running() == []
