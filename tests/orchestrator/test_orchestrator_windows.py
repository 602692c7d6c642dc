"""Every place where the orchestrator releases its lock, with a request stepped in exactly there.

The orchestrator never holds its lock while it calls the downloader or the engine, so each
such call is a window in which the user may change their mind. The fakes run a hook at the
exact point of each call (``fake.at(point, repo, hook)``); each test puts a request there
and checks that the orchestrator acted on the latest intent, not on what it had decided
before the window. The windows, in the order ``_run`` meets them:

1. the cache check (``is_downloaded``), right after the job left the queue;
2. the listing and the download (``plan``, ``download``);
3. the stale model's fit check (``check_fit``): issue 11's lost re-request;
4. the engine's eviction decision (``load``, before it decides): issue 11's evicted switch;
5. the load itself (``loaded``, after ``from_pretrained``);
6. the wait for a reply that holds the room (tests in test_orchestrator_memory.py too);
7. the unload of a model canceled while it compiled, and the rollback after it;
8. delivery of a failure's events, before the rollback queues the evicted model again;
9. the idle timer's unload (``tick``), and an explicit ``unload``;
10. a reply between taking its model and starting on it (``generate_start``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from orch_fakes import FakeClock, FakeDownloader, FakeEngine, Recorder

from chatwidget.catalog import ModelSpec
from chatwidget.engine.types import GenerationResult, GenerationSettings
from chatwidget.errors import ModelBusyError, ModelLoadError
from chatwidget.orchestrator import (
    Event,
    ModelState,
    Orchestrator,
    StateChanged,
    Switched,
)

S = ModelState
A, B, X, BASE = "org/a", "org/b", "org/x", "org/base"
HELLO = [{"role": "user", "content": "hello"}]
WAIT_S = 10.0


@pytest.fixture
def downloader() -> FakeDownloader:
    return FakeDownloader(cached=[BASE, X])


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def orch(
    downloader: FakeDownloader, engine: FakeEngine, clock: FakeClock
) -> Iterator[Orchestrator]:
    """c1 (group g1, on screen) chats on the Ready BASE; c2 is in group g2."""
    orchestrator = Orchestrator(downloader, engine, start=False, clock=clock)
    orchestrator.open_conversation("c1", group="g1")
    orchestrator.open_conversation("c2", group="g2")
    orchestrator.request_model("c1", BASE)
    drain(orchestrator)
    yield orchestrator
    for gate in engine.reply_gates.values():
        gate.set()
    orchestrator.close()


@pytest.fixture
def recorder(orch: Orchestrator) -> Recorder:
    recorder = Recorder()
    orch.subscribe(recorder)
    return recorder


def drain(orch: Orchestrator) -> None:
    while orch.step():
        pass


def switches(recorder: Recorder) -> list[tuple[str, str]]:
    return [(e.conversation_id, e.repo_id) for e in recorder.of(Switched)]


def states(recorder: Recorder, repo_id: str) -> list[ModelState]:
    return [e.new for e in recorder.of(StateChanged) if e.repo_id == repo_id]


# 1. the cache check --------------------------------------------------------------------


def test_window_cache_check_cancel_stops_the_job_before_any_download(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    orch.register(ModelSpec(A))  # known: the request itself does not check the cache
    orch.request_model("c1", A)
    downloader.at("is_downloaded", A, lambda: orch.cancel(A))
    drain(orch)
    assert orch.state(A) is S.CANCELED
    assert A not in downloader.calls
    assert orch.requested_model("c1") == BASE


def test_window_cache_check_a_change_of_mind_is_honoured_after_the_download(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    orch.request_model("c1", A)
    downloader.at("is_downloaded", A, lambda: orch.request_model("c1", BASE))
    drain(orch)
    assert orch.active_model("c1") == BASE
    assert orch.state(A) is S.READY  # it fits: a stale model that fits stays loaded
    assert switches(recorder) == []


# 2. listing and download ----------------------------------------------------------------


def test_window_plan_cancel_ends_the_download_before_it_starts(
    orch: Orchestrator, downloader: FakeDownloader
) -> None:
    orch.request_model("c1", A)
    downloader.at("plan", A, lambda: orch.cancel(A))
    drain(orch)
    assert orch.state(A) is S.CANCELED
    assert downloader.canceled == [A]


def test_window_download_another_conversation_asking_for_it_gets_it(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    orch.request_model("c1", A)
    downloader.at("download", A, lambda: orch.request_model("c1", BASE))  # c1 goes back
    downloader.at("download", A, lambda: orch.request_model("c2", A))  # c2 wants it now
    drain(orch)
    assert orch.active_model("c1") == BASE
    assert orch.active_model("c2") == A
    assert switches(recorder) == [("c2", A)]


# 3. the stale model's fit check (issue 11: a re-request made during it was lost) ---------


def test_window_stale_fit_check_a_re_request_there_is_not_lost(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.capacity = 1  # A does not fit beside BASE: stale, it would stop at Downloaded
    downloader.cached.add(A)  # no download: the only fit check is the stale one
    orch.request_model("c1", A)
    orch.request_model("c1", BASE)  # A is stale
    engine.at("check_fit", A, lambda: orch.request_model("c1", A))  # ...and wanted again
    drain(orch)
    assert orch.state(A) is S.READY
    assert orch.active_model("c1") == A
    assert orch.requested_model("c1") == A
    assert orch.snapshot().queue == ()
    assert switches(recorder) == [("c1", A)]


def test_window_stale_fit_check_a_new_active_model_there_is_kept(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine
) -> None:
    engine.capacity = 2
    downloader.cached.add(A)
    orch.request_model("c1", A)
    orch.request_model("c1", BASE)  # A is stale and fits beside BASE ...
    engine.preload(X)
    orch.register(ModelSpec(X))  # X is Ready, nobody's model yet
    engine.at("check_fit", A, lambda: orch.request_model("c2", X))  # ...not beside X too
    drain(orch)
    assert engine.is_loaded(X)
    assert engine.is_loaded(BASE)
    assert orch.state(A) is S.DOWNLOADED
    assert orch.active_model("c2") == X


# 4. the eviction decision (issue 11: a model switched to in between was evicted) ---------


def test_window_eviction_decision_a_model_switched_to_there_is_not_evicted(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.capacity = 2
    engine.preload(X)  # Ready, least recently used, nobody's model: the obvious victim
    orch.register(ModelSpec(X))
    engine.loaded.move_to_end(BASE)
    orch.request_model("c1", A)
    engine.at("load", A, lambda: orch.request_model("c2", X))  # c2 switches to X now
    drain(orch)
    assert switches(recorder)[-2:] == [("c2", X), ("c1", A)]
    assert engine.is_loaded(X), "X became c2's model before the engine decided: kept"
    assert orch.active_model("c2") == X
    assert orch.state(X) is S.READY
    assert not engine.is_loaded(BASE)  # c1's own old model made the room (a cold swap)
    assert orch.active_model("c1") == A


def test_window_eviction_decision_of_a_stale_load_keeps_a_model_switched_to_there(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    engine.capacity = 2
    engine.preload(X)
    orch.register(ModelSpec(X))
    orch.request_model("c1", A)
    orch.request_model("c1", BASE)  # A is stale; it fits beside BASE (X is nobody's)

    engine.at("load", A, lambda: orch.request_model("c2", X))  # now X is someone's
    drain(orch)
    assert engine.is_loaded(X)
    assert engine.is_loaded(BASE)
    assert orch.state(A) is S.DOWNLOADED  # no room beside both: the stale load stops


# 5. the load itself ----------------------------------------------------------------------


def test_window_load_a_switch_there_is_announced_when_it_is_ready(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    orch.request_model("c1", A)
    orch.request_model("c1", BASE)
    engine.at("loaded", A, lambda: orch.request_model("c2", A))
    drain(orch)
    assert orch.active_model("c2") == A
    assert orch.active_model("c1") == BASE
    assert switches(recorder)[-1] == ("c2", A)


# 6. the wait for a reply is in test_orchestrator_memory.py; one intent change here -------


def test_window_reply_wait_another_conversation_taking_the_model_lets_it_load(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    engine.capacity = 1
    release = engine.hold_replies(BASE)
    reply = threading.Thread(
        target=lambda: orch.generate("c1", HELLO, GenerationSettings()), daemon=True
    )
    reply.start()
    assert engine.reply_entered[BASE].wait(WAIT_S)
    orch.request_model("c1", A)
    orch.request_model("c1", BASE)  # stale: it would stop at Downloaded ...
    orch.request_model("c2", A)  # ... but c2 wants it, so it waits for the reply
    worker = threading.Thread(target=orch.step, daemon=True)
    worker.start()
    deadline = threading.Event()
    while orch.snapshot().models[A].note is None and not deadline.wait(0.005):
        pass
    assert orch.snapshot().models[A].state is S.COMPILING
    release.set()
    reply.join(WAIT_S)
    worker.join(WAIT_S)
    assert orch.active_model("c2") == A


# 7. canceled while compiling: the unload, then the rollback -------------------------------


def test_window_unload_of_a_canceled_load_a_new_request_there_is_served(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.capacity = 1
    orch.request_model("c1", A)
    engine.at("loaded", A, lambda: orch.cancel(A))
    engine.at("unload", A, lambda: orch.request_model("c1", A))  # asked for again meanwhile
    drain(orch)
    assert states(recorder, A)[-4:] == [S.CANCELED, S.QUEUED, S.COMPILING, S.READY]
    assert orch.active_model("c1") == A


# 8. a failure's events are delivered before the rollback -------------------------------------


def test_window_failure_delivery_a_request_there_is_not_queued_twice(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.capacity = 1
    engine.fail_next(A, ModelLoadError("A is broken."))

    def on_failed(event: Event) -> None:
        if isinstance(event, StateChanged) and event.repo_id == A and event.new is S.FAILED:
            orch.request_model("c1", BASE)  # BASE was evicted by A's load: asked for again

    orch.subscribe(on_failed)
    orch.request_model("c1", A)
    drain(orch)
    assert states(recorder, BASE).count(S.QUEUED) == 1
    assert orch.state(BASE) is S.READY
    assert orch.active_model("c1") == BASE


# 9. the idle timer and an explicit unload ---------------------------------------------------


def test_window_idle_unload_a_request_there_keeps_the_model(
    orch: Orchestrator, engine: FakeEngine, clock: FakeClock
) -> None:
    orch.set_keep_alive(60)
    clock.advance(60)
    engine.at("unload", BASE, lambda: orch.request_model("c2", BASE))  # used again now
    assert orch.tick() == ()
    assert orch.state(BASE) is S.READY
    assert engine.is_loaded(BASE)
    clock.advance(60)
    assert orch.tick() == (BASE,)  # idle again for keep_alive: now it goes


def test_window_idle_unload_a_reply_starting_there_keeps_the_model(
    orch: Orchestrator, engine: FakeEngine, clock: FakeClock
) -> None:
    orch.set_keep_alive(60)
    clock.advance(60)
    release = engine.hold_replies(BASE)
    results: list[GenerationResult] = []

    def start_reply() -> None:
        thread = threading.Thread(
            target=lambda: results.append(orch.generate("c1", HELLO, GenerationSettings())),
            daemon=True,
        )
        thread.start()
        assert engine.reply_entered[BASE].wait(WAIT_S)

    engine.at("unload", BASE, start_reply)
    assert orch.tick() == ()
    assert engine.is_loaded(BASE)
    release.set()


def test_window_explicit_unload_a_reply_starting_there_refuses_it(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    release = engine.hold_replies(BASE)

    def start_reply() -> None:
        threading.Thread(
            target=lambda: orch.generate("c1", HELLO, GenerationSettings()), daemon=True
        ).start()
        assert engine.reply_entered[BASE].wait(WAIT_S)

    engine.at("unload", BASE, start_reply)
    with pytest.raises(ModelBusyError):
        orch.unload(BASE)
    assert orch.state(BASE) is S.READY
    release.set()


# 10. a reply between taking its model and starting on it ---------------------------------


def test_window_reply_start_its_model_evicted_there_is_loaded_again(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    engine.at("generate_start", BASE, lambda: engine.evict(BASE))
    results: list[GenerationResult] = []
    reply = threading.Thread(
        target=lambda: results.append(orch.generate("c1", HELLO, GenerationSettings())),
        daemon=True,
    )
    reply.start()
    stop = threading.Event()
    while orch.snapshot().queue != (BASE,) and not stop.wait(0.005):
        pass
    drain(orch)  # the worker loads it again
    reply.join(WAIT_S)
    assert [r.usage.model for r in results] == [BASE]
    assert orch.state(BASE) is S.READY
