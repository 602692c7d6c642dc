"""The orchestrator with the real Downloader and Engine against the local hub.

The four scenarios of issue 5: chat while a model downloads; a change of intent
mid-download; a failure then a retry that reaches Ready; cancel of a queued item and of a
downloading item. Stalls injected in the hub hold a download open without any sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from orch_fakes import Recorder

from chatwidget.catalog import ModelSpec
from chatwidget.downloads import Downloader
from chatwidget.engine import Engine
from chatwidget.engine.types import GenerationSettings
from chatwidget.orchestrator import (
    ErrorReported,
    Event,
    ModelState,
    Orchestrator,
    StateChanged,
    Switched,
)
from chatwidget.testing.hub import Fault, LocalHub
from chatwidget.testing.models import DEMO_GATED_TOKEN
from tests.downloads.dl_helpers import download_children, eventually

S = ModelState
TINY, TINY_B, GATED = "demo/tiny-chat", "demo/tiny-chat-b", "gated/tiny-chat"
HELLO = [{"role": "user", "content": "hello"}]
SETTINGS = GenerationSettings(max_new_tokens=8)
WAIT_S = 60.0


def is_state(repo_id: str, state: ModelState) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        isinstance(e, StateChanged) and e.repo_id == repo_id and e.new is state for e in events
    )


def is_switch(cid: str, repo_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        isinstance(e, Switched) and (e.conversation_id, e.repo_id) == (cid, repo_id) for e in events
    )


class Setup:
    def __init__(self, orch: Orchestrator, recorder: Recorder, hub: LocalHub, cache: Path):
        self.orch, self.recorder, self.hub, self.cache = orch, recorder, hub, cache

    def stall_weights(self, repo_id: str) -> Fault:
        """Hold the weights download of ``repo_id`` open until the fault is released (the
        plan's Range reads of the safetensors headers pass)."""
        return self.hub.inject(
            f"/{repo_id}/resolve/*.safetensors", stall_after=1024, times=None, ranged=False
        )


@pytest.fixture
def setup(local_hub: LocalHub, hf_endpoint: str, hf_cache: Path) -> Iterator[Setup]:
    """A real orchestrator whose on-screen conversation c1 chats on the Ready TINY."""
    downloader = Downloader(endpoint=hf_endpoint, cache_dir=hf_cache, token=DEMO_GATED_TOKEN)
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=2 * 1024**3)
    orch = Orchestrator(downloader, engine)
    recorder = Recorder()
    orch.subscribe(recorder)
    orch.open_conversation("c1", model=TINY)
    recorder.wait_for(is_switch("c1", TINY), WAIT_S)
    try:
        yield Setup(orch, recorder, local_hub, hf_cache)
    finally:
        local_hub.clear_faults()
        orch.close()
        downloader.close()
        engine.close()
    assert eventually(download_children) == []


def test_chat_goes_on_while_a_model_downloads(setup: Setup) -> None:
    orch, recorder = setup.orch, setup.recorder
    stall = setup.stall_weights(TINY_B)
    assert orch.request_model("c1", TINY_B) is S.QUEUED
    assert stall.wait_triggered(WAIT_S)
    assert orch.state(TINY_B) is S.DOWNLOADING
    pieces: list[str] = []
    reply = orch.generate("c1", HELLO, SETTINGS, on_text=pieces.append)
    assert reply.usage.model == TINY
    assert reply.usage.new_tokens > 0
    assert "".join(pieces) == reply.text
    assert orch.state(TINY_B) is S.DOWNLOADING  # the chat did not wait for it
    stall.release()
    setup.hub.clear_faults()
    recorder.wait_for(is_switch("c1", TINY_B), WAIT_S)
    assert orch.generate("c1", HELLO, SETTINGS).usage.model == TINY_B


def test_change_of_intent_mid_download_leaves_the_model_ready_without_switching(
    setup: Setup,
) -> None:
    orch, recorder = setup.orch, setup.recorder
    stall = setup.stall_weights(TINY_B)
    orch.request_model("c1", TINY_B)
    assert stall.wait_triggered(WAIT_S)
    assert orch.request_model("c1", TINY) is S.READY  # the user goes back
    assert orch.requested_model("c1") == TINY
    setup.hub.clear_faults()
    recorder.wait_for(is_state(TINY_B, S.READY), WAIT_S)
    assert orch.wait_until_idle(WAIT_S)
    assert orch.active_model("c1") == TINY
    assert not is_switch("c1", TINY_B)(recorder.events)
    assert orch.generate("c1", HELLO, SETTINGS).usage.model == TINY


def test_failed_download_then_retry_reaches_ready(setup: Setup) -> None:
    orch, recorder = setup.orch, setup.recorder
    setup.hub.inject(f"/{TINY_B}/resolve/*.safetensors", method="GET", status=500, times=None)
    orch.request_model("c1", TINY_B)
    recorder.wait_for(is_state(TINY_B, S.FAILED), WAIT_S)
    status = orch.snapshot().models[TINY_B]
    reports = [e for e in recorder.of(ErrorReported) if e.repo_id == TINY_B]
    assert [(e.source, e.message) for e in reports] == [("download", status.error)]
    failed = [e for e in recorder.of(StateChanged) if e.new is S.FAILED]
    assert failed[0].error == status.error
    assert status.error is not None
    assert "500" in status.error
    assert "retry" in status.error  # the downloader's own message, which says what to do
    assert orch.generate("c1", HELLO, SETTINGS).usage.model == TINY  # chat unaffected
    setup.hub.clear_faults()
    orch.retry(TINY_B)
    recorder.wait_for(is_switch("c1", TINY_B), WAIT_S)
    after = orch.snapshot().models[TINY_B]
    assert (after.state, after.error, after.history) == (S.READY, None, (status.error,))


def test_cancel_of_a_queued_item_and_of_a_downloading_item(setup: Setup) -> None:
    orch, recorder, hub = setup.orch, setup.recorder, setup.hub
    orch.open_conversation("c2", group="other")
    stall = setup.stall_weights(TINY_B)
    orch.request_model("c1", TINY_B)
    orch.request_model("c2", ModelSpec(GATED))
    assert stall.wait_triggered(WAIT_S)
    assert orch.snapshot().queue == (GATED,)

    orch.cancel(GATED)
    assert orch.state(GATED) is S.CANCELED
    assert orch.snapshot().queue == ()
    assert orch.requested_model("c2") is None

    assert len(download_children()) == 1
    started = time.monotonic()
    orch.cancel(TINY_B)
    assert orch.state(TINY_B) is S.CANCELED
    assert orch.requested_model("c1") == TINY
    assert orch.wait_until_idle(WAIT_S)
    assert time.monotonic() - started < 5.0
    assert eventually(download_children) == []
    assert sorted(setup.cache.rglob("*.incomplete")) == []
    assert not any(r.path.startswith(f"/api/models/{GATED}") for r in hub.requests)
    assert orch.generate("c1", HELLO, SETTINGS).usage.model == TINY
    assert not is_switch("c1", TINY_B)(recorder.events)


def test_close_mid_download_stops_the_worker_and_the_child_process(
    local_hub: LocalHub, hf_endpoint: str, hf_cache: Path
) -> None:
    before = set(threading.enumerate())
    downloader = Downloader(endpoint=hf_endpoint, cache_dir=hf_cache)
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=2 * 1024**3)
    orch = Orchestrator(downloader, engine)
    orch.open_conversation("c1")
    stall = local_hub.inject(
        f"/{TINY}/resolve/*.safetensors", stall_after=1024, times=None, ranged=False
    )
    try:
        orch.request_model("c1", TINY)
        assert stall.wait_triggered(WAIT_S)
        assert len(download_children()) == 1
        started = time.monotonic()
        orch.close()
        assert time.monotonic() - started < 2.0
        assert eventually(download_children) == []
        assert orch.state(TINY) is S.CANCELED
        ours = {
            t
            for t in set(threading.enumerate()) - before
            if t.is_alive() and "process_request_thread" not in t.name  # the hub's handlers
        }
        assert ours == set()
        orch.close()
    finally:
        local_hub.clear_faults()
        downloader.close()
        engine.close()


def test_model_too_big_for_memory_is_refused_before_any_weights_are_fetched(
    local_hub: LocalHub, hf_endpoint: str, hf_cache: Path
) -> None:
    downloader = Downloader(endpoint=hf_endpoint, cache_dir=hf_cache)
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=1_000_000)  # below any model
    orch = Orchestrator(downloader, engine)
    recorder = Recorder()
    orch.subscribe(recorder)
    try:
        orch.open_conversation("c1")
        orch.request_model("c1", TINY)
        recorder.wait_for(is_state(TINY, S.FAILED), WAIT_S)
        error = orch.snapshot().models[TINY].error or ""
        assert "memory" in error.lower()
        weights = [r for r in local_hub.requests if r.path.endswith(".safetensors")]
        assert weights, "the plan read the safetensors header"
        assert all(r.range is not None and r.status == 206 for r in weights), "header reads only"
        assert not downloader.is_downloaded(TINY)
        errors = [e for e in recorder.events if isinstance(e, ErrorReported)]
        assert [e.repo_id for e in errors] == [TINY]
    finally:
        orch.close()
        downloader.close()
        engine.close()
