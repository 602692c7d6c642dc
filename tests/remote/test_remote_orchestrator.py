"""The real orchestrator driving local and remote models together through the routing ports.

The real Downloader and Engine against the local hub, the RemoteEngine against a real
``transformers serve`` behind the fault proxy. The four seed scenarios of the orchestrator's
integration tests, each with one remote model, and the guard across kinds: A (local,
downloading) -> B (remote) -> A behaves as it does with two local models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatwidget.catalog import ModelSpec, remote_key
from chatwidget.downloads import Downloader
from chatwidget.engine import Engine
from chatwidget.engine.remote import RemoteEngine, RoutingDownloader, RoutingEngine
from chatwidget.orchestrator import (
    ErrorReported,
    Event,
    Evicted,
    ModelState,
    Orchestrator,
    StateChanged,
    Switched,
)
from chatwidget.orchestrator.lifecycle import can_retry
from chatwidget.testing.fault_proxy import FaultProxy, ProxyFault
from chatwidget.testing.hub import Fault, LocalHub
from chatwidget.testing.models import DEMO_TINY_B_REPO, DEMO_TINY_REPO
from chatwidget.testing.transformers_serve import ServedModel
from tests.downloads.dl_helpers import download_children, eventually
from tests.orchestrator.orch_fakes import Recorder
from tests.remote.helpers import CHAT, HELLO, QUICK, SERVER, SHORT, WAIT_S

S = ModelState
TINY, TINY_B = DEMO_TINY_REPO, DEMO_TINY_B_REPO


def is_state(repo_id: str, state: ModelState) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        isinstance(e, StateChanged) and e.repo_id == repo_id and e.new is state for e in events
    )


def is_switch(cid: str, repo_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        isinstance(e, Switched) and (e.conversation_id, e.repo_id) == (cid, repo_id) for e in events
    )


def states(recorder: Recorder, repo_id: str) -> list[ModelState]:
    return [e.new for e in recorder.of(StateChanged) if e.repo_id == repo_id]


@dataclass
class Mixed:
    """An orchestrator over local and remote engines, and the levers on hub and proxy."""

    orch: Orchestrator
    recorder: Recorder
    hub: LocalHub
    proxy: FaultProxy
    remote: RemoteEngine
    r: str  # the remote model's key

    def stall_weights(self, repo_id: str) -> Fault:
        """Hold the weights download of ``repo_id`` open until the fault is released."""
        return self.hub.inject(f"/{repo_id}/resolve/*.safetensors", stall_after=1024, times=None)

    def hold_connecting(self) -> ProxyFault:
        """Hold the Connecting request of the remote model until the fault is released."""
        return self.proxy.inject(CHAT, hold=True)


def make_orchestrator(
    hf_endpoint: str, hf_cache: Path, remote: RemoteEngine
) -> tuple[Orchestrator, Downloader, Engine]:
    downloader = Downloader(endpoint=hf_endpoint, cache_dir=hf_cache)
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=2 * 1024**3)
    orch = Orchestrator(RoutingDownloader(downloader), RoutingEngine(engine, remote))
    return orch, downloader, engine


@pytest.fixture
def mixed(
    local_hub: LocalHub,
    hf_endpoint: str,
    hf_cache: Path,
    proxy: FaultProxy,
    served: ServedModel,
) -> Iterator[Mixed]:
    """c1 (on screen) chats on the local TINY; the remote model is known but at rest."""
    remote = RemoteEngine(settings=QUICK)
    remote.add_server(proxy.url + "/v1", name=SERVER)
    orch, downloader, engine = make_orchestrator(hf_endpoint, hf_cache, remote)
    recorder = Recorder()
    orch.subscribe(recorder)
    orch.open_conversation("c1", model=TINY)
    recorder.wait_for(is_switch("c1", TINY), WAIT_S)
    try:
        yield Mixed(orch, recorder, local_hub, proxy, remote, remote_key(SERVER, served.model_id))
    finally:
        local_hub.clear_faults()
        proxy.clear_faults()
        orch.close()
        downloader.close()
        engine.close()
        remote.close()
    assert eventually(download_children) == []


def test_a_remote_model_goes_queued_connecting_ready_and_needs_no_download(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    orch.register(ModelSpec(mixed.r))
    assert orch.state(mixed.r) is S.DOWNLOADED  # at rest: nothing to download
    assert orch.request_model("c1", mixed.r) is S.QUEUED
    recorder.wait_for(is_switch("c1", mixed.r), WAIT_S)
    assert states(recorder, mixed.r) == [S.QUEUED, S.CONNECTING, S.READY]
    assert orch.active_model("c1") == mixed.r
    assert not any(r.path.startswith(f"/api/models/{SERVER}") for r in mixed.hub.requests)
    reply = orch.generate("c1", HELLO, SHORT)
    assert reply.usage.model == mixed.r
    assert reply.usage.new_tokens == 8


def test_chat_on_a_remote_model_goes_on_while_a_local_model_downloads(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    orch.request_model("c1", mixed.r)
    recorder.wait_for(is_switch("c1", mixed.r), WAIT_S)
    stall = mixed.stall_weights(TINY_B)
    assert orch.request_model("c1", TINY_B) is S.QUEUED
    assert stall.wait_triggered(WAIT_S)
    assert orch.state(TINY_B) is S.DOWNLOADING
    pieces: list[str] = []
    reply = orch.generate("c1", HELLO, SHORT, on_text=pieces.append)
    assert reply.usage.model == mixed.r
    assert "".join(pieces) == reply.text != ""
    assert orch.state(TINY_B) is S.DOWNLOADING  # the chat did not wait for it
    stall.release()
    mixed.hub.clear_faults()
    recorder.wait_for(is_switch("c1", TINY_B), WAIT_S)
    assert orch.generate("c1", HELLO, SHORT).usage.model == TINY_B


def test_chat_on_a_local_model_goes_on_while_a_remote_model_connects(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    held = mixed.hold_connecting()
    orch.request_model("c1", mixed.r)
    assert held.wait_triggered(WAIT_S)
    assert orch.state(mixed.r) is S.CONNECTING
    assert orch.generate("c1", HELLO, SHORT).usage.model == TINY
    held.release()
    recorder.wait_for(is_switch("c1", mixed.r), WAIT_S)
    assert orch.generate("c1", HELLO, SHORT).usage.model == mixed.r


def test_local_downloading_then_remote_then_local_again_switches_only_to_the_last_wish(
    mixed: Mixed,
) -> None:
    """A (local, downloading) -> B (remote) -> A: as with two local models."""
    orch, recorder = mixed.orch, mixed.recorder
    stall = mixed.stall_weights(TINY_B)
    orch.request_model("c1", TINY_B)  # A
    assert stall.wait_triggered(WAIT_S)
    assert orch.request_model("c1", mixed.r) is S.QUEUED  # B, queued behind A's download
    assert orch.snapshot().queue == (mixed.r,)
    assert orch.request_model("c1", TINY_B) is S.DOWNLOADING  # A again: only the intent moves
    assert orch.requested_model("c1") == TINY_B
    mixed.hub.clear_faults()
    recorder.wait_for(is_switch("c1", TINY_B), WAIT_S)
    recorder.wait_for(is_state(mixed.r, S.READY), WAIT_S)  # B still connects: it was asked for
    assert orch.wait_until_idle(WAIT_S)
    assert orch.active_model("c1") == TINY_B
    assert not is_switch("c1", mixed.r)(recorder.events)  # the stale completion did not switch
    assert orch.generate("c1", HELLO, SHORT).usage.model == TINY_B


def test_change_of_intent_while_connecting_leaves_the_remote_model_ready_without_switching(
    mixed: Mixed,
) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    held = mixed.hold_connecting()
    orch.request_model("c1", mixed.r)
    assert held.wait_triggered(WAIT_S)
    assert orch.request_model("c1", TINY) is S.READY  # the user goes back
    held.release()
    recorder.wait_for(is_state(mixed.r, S.READY), WAIT_S)
    assert orch.wait_until_idle(WAIT_S)
    assert orch.active_model("c1") == TINY
    assert not is_switch("c1", mixed.r)(recorder.events)
    assert orch.request_model("c1", mixed.r) is S.READY  # now it is a switch at once
    assert orch.generate("c1", HELLO, SHORT).usage.model == mixed.r


def test_failed_connecting_then_retry_reaches_ready(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    mixed.proxy.inject(CHAT, status=500, message="model not loaded yet", times=None)
    orch.request_model("c1", mixed.r)
    recorder.wait_for(is_state(mixed.r, S.FAILED), WAIT_S)
    status = orch.snapshot().models[mixed.r]
    assert states(recorder, mixed.r) == [S.QUEUED, S.CONNECTING, S.FAILED]
    assert status.failure is not None
    assert (status.failure.kind, status.failure.retryable) == ("server", True)
    assert "HTTP 500" in (status.error or "")
    assert "model not loaded yet" in (status.error or "")
    assert can_retry(status.state, status.failure)
    reports = [e for e in recorder.of(ErrorReported) if e.repo_id == mixed.r]
    assert [(e.source, e.message) for e in reports] == [("load", status.error)]
    assert orch.generate("c1", HELLO, SHORT).usage.model == TINY  # chat unaffected
    mixed.proxy.clear_faults()
    orch.retry(mixed.r)
    recorder.wait_for(is_switch("c1", mixed.r), WAIT_S)
    after = orch.snapshot().models[mixed.r]
    assert (after.state, after.error, after.history) == (S.READY, None, (status.error,))


def test_a_wrong_key_fails_connecting_without_retry(
    local_hub: LocalHub, hf_endpoint: str, hf_cache: Path, served: ServedModel
) -> None:
    with FaultProxy(served.url, api_key="sk-right") as guarded:
        remote = RemoteEngine(settings=QUICK)
        remote.add_server(guarded.url, name=SERVER, api_key="sk-wrong")
        orch, downloader, engine = make_orchestrator(hf_endpoint, hf_cache, remote)
        recorder = Recorder()
        orch.subscribe(recorder)
        key = remote_key(SERVER, served.model_id)
        try:
            orch.open_conversation("c1", model=key)
            recorder.wait_for(is_state(key, S.FAILED), WAIT_S)
            status = orch.snapshot().models[key]
            assert status.failure is not None
            assert (status.failure.kind, status.failure.action) == ("auth", "Check the API key")
            assert not can_retry(status.state, status.failure)
            assert orch.active_model("c1") is None
        finally:
            orch.close()
            downloader.close()
            engine.close()
            remote.close()


def test_cancel_of_a_queued_remote_model_and_of_a_downloading_local_one(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    orch.open_conversation("c2", group="other")
    stall = mixed.stall_weights(TINY_B)
    orch.request_model("c1", TINY_B)
    orch.request_model("c2", mixed.r)
    assert stall.wait_triggered(WAIT_S)
    assert orch.snapshot().queue == (mixed.r,)

    orch.cancel(mixed.r)
    assert orch.state(mixed.r) is S.CANCELED
    assert orch.snapshot().queue == ()
    assert orch.requested_model("c2") is None

    orch.cancel(TINY_B)
    assert orch.state(TINY_B) is S.CANCELED
    assert orch.requested_model("c1") == TINY
    assert orch.wait_until_idle(WAIT_S)
    assert eventually(download_children) == []
    assert mixed.proxy.requests == []  # the canceled remote model never sent a request
    assert orch.generate("c1", HELLO, SHORT).usage.model == TINY
    assert not is_switch("c2", mixed.r)(recorder.events)


def test_cancel_while_connecting_never_makes_the_remote_model_ready(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    held = mixed.hold_connecting()
    orch.request_model("c1", mixed.r)
    assert held.wait_triggered(WAIT_S)
    orch.cancel(mixed.r)
    assert orch.state(mixed.r) is S.CANCELED
    assert orch.requested_model("c1") == TINY
    held.release()
    assert orch.wait_until_idle(WAIT_S)
    assert orch.state(mixed.r) is S.CANCELED
    assert not mixed.remote.is_loaded(mixed.r)  # the orchestrator dropped the connection
    assert not is_switch("c1", mixed.r)(recorder.events)
    orch.request_model("c1", mixed.r)  # asked again, it connects and switches
    recorder.wait_for(is_switch("c1", mixed.r), WAIT_S)


def test_a_model_of_an_unknown_server_fails_with_add_the_server(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    orch.request_model("c1", "nowhere:some/model")
    recorder.wait_for(is_state("nowhere:some/model", S.FAILED), WAIT_S)
    failure = orch.snapshot().models["nowhere:some/model"].failure
    assert failure is not None
    assert (failure.kind, failure.action) == ("unknown_server", "Add the server")
    assert orch.active_model("c1") == TINY


def test_removing_a_server_evicts_its_ready_models(mixed: Mixed) -> None:
    orch, recorder = mixed.orch, mixed.recorder
    orch.request_model("c1", mixed.r)
    recorder.wait_for(is_switch("c1", mixed.r), WAIT_S)
    assert mixed.remote.remove_server(SERVER) == (mixed.r,)
    assert [e.repo_id for e in recorder.of(Evicted)] == [mixed.r]
    assert orch.state(mixed.r) is S.DOWNLOADED
    # as when the warm pool evicts a local model: c1 keeps it, asleep (its next reply
    # connects again, and says "Add the server" if the server is still gone)
    assert orch.active_model("c1") == mixed.r
    assert orch.snapshot().is_asleep("c1")
