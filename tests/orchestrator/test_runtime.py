"""The shared runtime: its memory policy (arguments and environment), consumers that go away
without closing, partial downloads dead processes left, and shutdown that never blocks."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from filelock import FileLock

from chatwidget import runtime
from chatwidget.errors import InvalidSettingError
from chatwidget.orchestrator import MemoryPolicy, ModelState
from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
WAIT_S = 60.0


class Owner:
    """Stands for a widget: anything that can be garbage-collected."""


def test_the_policy_comes_from_arguments_over_the_environment(
    hf_endpoint: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATWIDGET_MEMORY_BUDGET", "3GB")
    monkeypatch.setenv("CHATWIDGET_MAX_LOADED_MODELS", "2")
    monkeypatch.setenv("CHATWIDGET_KEEP_ALIVE", "10m")
    rt = runtime.acquire(endpoint=hf_endpoint, cache_dir=hf_cache, keep_alive="30s")
    try:
        assert rt.policy == MemoryPolicy(3_000_000_000, 2, 30.0)
        assert rt.engine.memory_budget_bytes == 3_000_000_000
        assert rt.engine.max_loaded_models == 2
        assert rt.orchestrator.keep_alive_s == 30.0
        # a second widget with its own settings: the runtime is shared, the last one wins
        again = runtime.acquire(endpoint=hf_endpoint, cache_dir=hf_cache, memory_budget="1GiB")
        assert again is rt
        assert rt.engine.memory_budget_bytes == 1024**3
        assert rt.orchestrator.keep_alive_s == 30.0
        runtime.release(again)
        assert rt.configure(keep_alive=None, max_loaded_models=None) == MemoryPolicy(
            1024**3, None, None
        )
        with pytest.raises(InvalidSettingError, match="keep_alive"):
            rt.configure(keep_alive="whenever")
        assert rt.orchestrator.keep_alive_s is None  # nothing changed
    finally:
        runtime.release(rt)


def test_a_bad_environment_variable_fails_before_anything_starts(
    hf_endpoint: str, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATWIDGET_MEMORY_BUDGET", "plenty")
    threads = set(threading.enumerate())
    children = {p.pid for p in psutil.Process().children()}
    with pytest.raises(InvalidSettingError, match="CHATWIDGET_MEMORY_BUDGET='plenty'"):
        runtime.acquire(endpoint=hf_endpoint, cache_dir=hf_cache)
    assert set(threading.enumerate()) - threads == set()
    assert {p.pid for p in psutil.Process().children()} - children == set()


def test_defaults_are_as_before(hf_endpoint: str, hf_cache: Path) -> None:
    rt = runtime.acquire(endpoint=hf_endpoint, cache_dir=hf_cache)
    try:
        assert rt.policy == MemoryPolicy()
        assert rt.engine.max_loaded_models is None
        assert rt.orchestrator.keep_alive_s is None
        free = psutil.virtual_memory().available
        assert 0.3 * free <= rt.engine.memory_budget_bytes <= 0.7 * free
    finally:
        runtime.release(rt)


def test_a_garbage_collected_owner_stops_pinning_its_models(
    hf_endpoint: str, hf_cache: Path
) -> None:
    stays = Owner()
    keeper = runtime.connect(stays, endpoint=hf_endpoint, cache_dir=hf_cache)
    owner = Owner()
    consumer = runtime.connect(owner, endpoint=hf_endpoint, cache_dir=hf_cache, token="hf_x")
    rt = consumer.runtime
    assert keeper.runtime is rt
    orch = rt.orchestrator
    try:
        orch.open_conversation("old", group=consumer.group, model=TINY)
        assert orch.wait_until_idle(WAIT_S)
        assert orch.active_model("old") == TINY
        assert orch.has_token(consumer.group)
        users = rt.users
        del owner
        gc.collect()
        assert runtime.wait_for_reaper(WAIT_S)
        assert consumer.closed
        assert "old" not in orch.snapshot().conversations  # nothing holds TINY any more
        assert not orch.has_token(consumer.group)
        assert rt.users == users - 1
        assert orch.state(TINY) is ModelState.READY  # still loaded, but evictable like any
    finally:
        keeper.close()
    assert rt.closed  # the last consumer went: the runtime closed
    del stays


def test_closing_a_consumer_twice_and_after_its_owner_went_is_harmless(
    hf_endpoint: str, hf_cache: Path
) -> None:
    owner = Owner()
    consumer = runtime.connect(owner, endpoint=hf_endpoint, cache_dir=hf_cache)
    consumer.close()
    consumer.close()
    del owner
    gc.collect()
    assert runtime.wait_for_reaper(WAIT_S)
    assert consumer.runtime.closed
    assert "closed" in repr(consumer)


def _partial(cache: Path, repo_id: str, name: str) -> Path:
    blobs = cache / ("models--" + repo_id.replace("/", "--")) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    path = blobs / name
    path.write_bytes(b"half a file")
    return path


HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from filelock import FileLock
    with FileLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # until the test closes stdin
    """
)


def test_the_runtime_removes_partial_files_of_dead_processes_but_not_of_live_ones(
    hf_endpoint: str, hf_cache: Path
) -> None:
    dead = _partial(hf_cache, TINY, "a" * 64 + ".0123abcd.incomplete")
    live = _partial(hf_cache, "demo/other", "b" * 64 + ".4567cdef.incomplete")
    lock = hf_cache / ".locks" / "models--demo--other" / ("b" * 64 + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"  # a live download holds it
        rt = runtime.acquire(endpoint=hf_endpoint, cache_dir=hf_cache)
        runtime.release(rt)
        assert not dead.exists()
        assert live.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(WAIT_S)
        if holder.stdout is not None:
            holder.stdout.close()
    with FileLock(str(lock), timeout=5):  # released by its owner
        pass


EXIT_DURING_LOAD = textwrap.dedent(
    """
    import sys, threading, time
    from chatwidget import runtime
    from chatwidget.engine import engine as engine_module

    entered = threading.Event()
    def never_done(cached, **kwargs):  # a load that takes far longer than shutdown may
        entered.set()
        time.sleep(3600)
    engine_module.load_from_cache = never_done

    rt = runtime.acquire(endpoint=sys.argv[1], cache_dir=sys.argv[2])
    rt.orchestrator.open_conversation("c1", model=sys.argv[3])
    if not entered.wait(120):
        sys.exit("the load did not start")
    print("loading", flush=True)
    # no close(): the interpreter exits as a kernel does; atexit closes the runtime
    """
)


def test_atexit_never_blocks_shutdown_during_a_load(local_hub: LocalHub, hf_cache: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(TINY, endpoint=local_hub.url, cache_dir=hf_cache)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", EXIT_DURING_LOAD, local_hub.url, str(hf_cache), TINY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "loading" in result.stdout
    assert took < 60, f"exit took {took:.1f} s"
