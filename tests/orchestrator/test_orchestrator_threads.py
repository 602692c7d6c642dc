"""The orchestrator with its real worker thread: chat never waits, close stops everything."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from orch_fakes import FakeDownloader, FakeEngine, Recorder

from chatwidget.catalog import ModelSpec
from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import OrchestratorClosedError
from chatwidget.orchestrator import (
    Event,
    ModelState,
    Orchestrator,
    ProgressChanged,
    StateChanged,
    Switched,
)

S = ModelState
A, B, BASE = "org/a", "org/b", "org/base"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def threaded() -> Iterator[tuple[Orchestrator, FakeDownloader, FakeEngine, Recorder]]:
    """A started orchestrator whose conversation c1 chats on the Ready model BASE."""
    downloader = FakeDownloader(cached=[BASE])
    engine = FakeEngine()
    engine.preload(BASE)
    orch = Orchestrator(downloader, engine)
    recorder = Recorder()
    orch.subscribe(recorder)
    orch.open_conversation("c1", model=BASE)
    yield orch, downloader, engine, recorder
    for gate in (*downloader.gates.values(), *engine.gates.values()):
        gate.set()
    orch.close()


def is_switch(cid: str, repo_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        isinstance(e, Switched) and (e.conversation_id, e.repo_id) == (cid, repo_id) for e in events
    )


def test_chat_keeps_working_while_a_download_runs(
    threaded: tuple[Orchestrator, FakeDownloader, FakeEngine, Recorder],
) -> None:
    orch, downloader, _engine, recorder = threaded
    release = downloader.gate(A)
    assert orch.request_model("c1", A) is S.QUEUED  # returns at once
    assert downloader.entered[A].wait(10)
    assert orch.state(A) is S.DOWNLOADING
    result = orch.generate("c1", HELLO, GenerationSettings())
    assert result.text == "reply from org/base to hello"
    assert orch.active_model("c1") == BASE
    release.set()
    recorder.wait_for(is_switch("c1", A))
    assert orch.wait_until_idle(10)
    assert orch.active_model("c1") == A
    seqs = [e.seq for e in recorder.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_chat_keeps_working_while_a_model_compiles(
    threaded: tuple[Orchestrator, FakeDownloader, FakeEngine, Recorder],
) -> None:
    orch, _downloader, engine, recorder = threaded
    release = engine.gate(A)
    orch.request_model("c1", A)
    assert engine.entered[A].wait(10)
    assert orch.state(A) is S.COMPILING
    assert orch.generate("c1", HELLO, GenerationSettings()).text.startswith("reply from org/base")
    release.set()
    recorder.wait_for(is_switch("c1", A))


def test_wait_until_idle_times_out_while_work_is_blocked(
    threaded: tuple[Orchestrator, FakeDownloader, FakeEngine, Recorder],
) -> None:
    orch, downloader, _engine, _recorder = threaded
    release = downloader.gate(A)
    orch.request_model("c1", A)
    assert downloader.entered[A].wait(10)
    assert orch.wait_until_idle(0.05) is False
    assert orch.snapshot().working == A
    release.set()
    assert orch.wait_until_idle(10) is True
    assert orch.snapshot().working is None


def test_intent_change_mid_download_leaves_the_finished_model_ready_without_switching(
    threaded: tuple[Orchestrator, FakeDownloader, FakeEngine, Recorder],
) -> None:
    orch, downloader, _engine, recorder = threaded
    release = downloader.gate(A)
    orch.request_model("c1", A)
    assert downloader.entered[A].wait(10)
    orch.request_model("c1", BASE)
    release.set()
    assert orch.wait_until_idle(10)
    assert orch.state(A) is S.READY
    assert orch.active_model("c1") == BASE
    assert not is_switch("c1", A)(recorder.events)


def test_close_cancels_work_and_stops_the_worker_within_two_seconds() -> None:
    before = set(threading.enumerate())
    downloader = FakeDownloader()
    downloader.gate(A)  # never released: only the cancel can end it
    orch = Orchestrator(downloader, FakeEngine())
    recorder = Recorder()
    orch.subscribe(recorder)
    orch.open_conversation("c1")
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    assert downloader.entered[A].wait(10)
    started = time.monotonic()
    orch.close()
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert set(threading.enumerate()) - before == set()
    assert (orch.state(A), orch.state(B)) == (S.CANCELED, S.CANCELED)
    assert downloader.canceled == [A]
    canceled = [e.repo_id for e in recorder.of(StateChanged) if e.new is S.CANCELED]
    assert sorted(canceled) == [A, B]
    orch.close()  # harmless
    with pytest.raises(OrchestratorClosedError, match="create a new one"):
        orch.request_model("c1", ModelSpec(B))


def test_many_threads_requesting_at_once_queue_each_model_once() -> None:
    downloader = FakeDownloader()
    orch = Orchestrator(downloader, FakeEngine())
    recorder = Recorder()
    orch.subscribe(recorder)
    repos = [f"org/m{i}" for i in range(5)]
    for t in range(4):
        orch.open_conversation(f"c{t}", group=f"g{t}")
    barrier = threading.Barrier(4)

    def user(t: int) -> None:
        barrier.wait()
        for repo in repos:
            orch.request_model(f"c{t}", repo)

    threads = [threading.Thread(target=user, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    try:
        assert orch.wait_until_idle(10)
        assert sorted(downloader.calls) == repos
        for t in range(4):
            assert orch.active_model(f"c{t}") == repos[-1]
        seqs = [e.seq for e in recorder.events]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        orch.close()


def test_a_subscriber_stuck_on_the_worker_does_not_block_callers() -> None:
    orch = Orchestrator(FakeDownloader(), FakeEngine())
    orch.open_conversation("c1")
    inside, release = threading.Event(), threading.Event()

    def slow(event: object) -> None:
        if isinstance(event, ProgressChanged) and not inside.is_set():
            inside.set()
            release.wait(10)

    orch.subscribe(slow)
    recorder = Recorder()
    orch.subscribe(recorder)
    try:
        orch.request_model("c1", A)
        assert inside.wait(10)  # the worker thread is inside the slow subscriber
        assert orch.request_model("c1", B) is S.QUEUED  # returns: delivery is left to it
        assert orch.wait_until_idle(0.05) is False  # events are still undelivered
        release.set()
        assert orch.wait_until_idle(10)
        seqs = [e.seq for e in recorder.events]
        assert seqs == list(range(1, len(seqs) + 1))
        assert orch.snapshot().seq == seqs[-1]
        assert is_switch("c1", B)(recorder.events)
    finally:
        release.set()
        orch.close()


def test_a_subscriber_that_calls_back_in_sees_events_in_order() -> None:
    orch = Orchestrator(FakeDownloader(), FakeEngine(), start=False)
    orch.open_conversation("c1")

    def chooser(event: object) -> None:
        if isinstance(event, Switched) and event.repo_id == A:
            orch.request_model("c1", B)  # publishes while A's switch is being delivered

    orch.subscribe(chooser)
    recorder = Recorder()
    orch.subscribe(recorder)
    orch.request_model("c1", A)
    while orch.step():
        pass
    seqs = [e.seq for e in recorder.events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert orch.active_model("c1") == B
    orch.close()
