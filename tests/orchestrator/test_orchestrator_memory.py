"""Memory policy, asleep models, unload, cold swaps that wait for replies, rollback, tokens.

Sequencing against the fake boundaries (orch_fakes); the same behaviours on the real
downloader and engine are in test_lifecycle_real.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from orch_fakes import FakeClock, FakeDownloader, FakeEngine, Recorder

from chatwidget.catalog import ModelSpec
from chatwidget.engine.types import GenerationResult, GenerationSettings
from chatwidget.errors import (
    GatedRepoError,
    ModelBusyError,
    ModelLoadError,
    ModelUnavailableError,
    SpecConflictError,
)
from chatwidget.orchestrator import (
    PHASE_GENERATING,
    PHASE_LOADING,
    Event,
    Evicted,
    ModelState,
    NoteChanged,
    Orchestrator,
    StateChanged,
    Switched,
)

S = ModelState
A, B, C = "org/a", "org/b", "org/c"
HELLO = [{"role": "user", "content": "hello"}]
SETTINGS = GenerationSettings()
WAIT_S = 10.0
TOKEN = "hf_secret_token_for_g1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def downloader() -> FakeDownloader:
    return FakeDownloader(cached=[A, B, C])


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(capacity=1)  # room for one model: every switch is a cold swap


@pytest.fixture
def orch(
    downloader: FakeDownloader, engine: FakeEngine, clock: FakeClock
) -> Iterator[Orchestrator]:
    orchestrator = Orchestrator(downloader, engine, start=False, clock=clock)
    orchestrator.open_conversation("c1", group="g1")
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


def ready(orch: Orchestrator, cid: str, repo_id: str) -> None:
    orch.request_model(cid, repo_id)
    drain(orch)
    assert orch.active_model(cid) == repo_id
    assert orch.state(repo_id) is S.READY


class Reply:
    """``orch.generate`` in a thread, with its phases and result."""

    def __init__(self, orch: Orchestrator, cid: str = "c1") -> None:
        self.phases: list[str] = []
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(orch, cid), daemon=True)
        self.thread.start()

    def _run(self, orch: Orchestrator, cid: str) -> None:
        try:
            self.result = orch.generate(
                cid, HELLO, SETTINGS, stop=self.stop, on_phase=self.phases.append
            )
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the reply did not end"


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition with a deadline (for states another thread reaches)."""
    event = threading.Event()
    for _ in range(int(WAIT_S / 0.005)):
        if predicate():
            return
        event.wait(0.005)
    raise AssertionError(f"timed out waiting until {what}")


def step_in_thread(orch: Orchestrator) -> threading.Thread:
    thread = threading.Thread(target=orch.step, daemon=True)
    thread.start()
    return thread


# --- a cold swap waits for the reply on the old model ------------------------------------


def test_cold_swap_waits_in_compiling_until_the_reply_on_the_old_model_ends(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    ready(orch, "c1", A)
    release = engine.hold_replies(A)
    reply = Reply(orch)
    assert engine.reply_entered[A].wait(WAIT_S)  # the reply streams on A
    orch.request_model("c1", B)
    worker = step_in_thread(orch)
    wait_until(lambda: orch.snapshot().models[B].note is not None, "B waits")
    status = orch.snapshot().models[B]
    assert status.state is S.COMPILING
    assert status.note == "waiting for the reply on org/a to finish"
    assert engine.loaded == {A: 1}, "A stays loaded under its reply; B is not loaded beside it"
    assert orch.active_model("c1") == A
    release.set()
    reply.join()
    worker.join(WAIT_S)
    assert reply.result is not None
    assert reply.result.usage.model == A  # the reply finished on its model
    assert orch.state(B) is S.READY
    assert orch.active_model("c1") == B
    assert engine.peak_bytes <= engine.capacity  # never two models above the budget
    notes = [e.note for e in recorder.of(NoteChanged) if e.repo_id == B]
    assert notes == ["waiting for the reply on org/a to finish", None]
    assert orch.snapshot().models[B].note is None


def test_stopping_the_reply_lets_the_waiting_model_load(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    ready(orch, "c1", A)
    engine.hold_replies(A)  # never released: only the stop ends it
    reply = Reply(orch)
    assert engine.reply_entered[A].wait(WAIT_S)
    orch.request_model("c1", B)
    worker = step_in_thread(orch)
    wait_until(lambda: orch.snapshot().models[B].note is not None, "B waits")
    reply.stop.set()
    reply.join()
    worker.join(WAIT_S)
    assert reply.result is not None
    assert reply.result.stopped
    assert orch.active_model("c1") == B


def test_switching_back_while_the_load_waits_stops_it_at_downloaded(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    ready(orch, "c1", A)
    release = engine.hold_replies(A)
    reply = Reply(orch)
    assert engine.reply_entered[A].wait(WAIT_S)
    orch.request_model("c1", B)
    worker = step_in_thread(orch)
    wait_until(lambda: orch.snapshot().models[B].note is not None, "B waits")
    assert orch.request_model("c1", A) is S.READY  # the user goes back: B is stale now
    worker.join(WAIT_S)
    assert not worker.is_alive(), "a stale load that does not fit stops without waiting"
    assert orch.state(B) is S.DOWNLOADED
    assert orch.snapshot().models[B].note is None
    assert engine.loaded == {A: 1}
    release.set()
    reply.join()
    assert [e.new for e in recorder.of(StateChanged) if e.repo_id == B][-2:] == [
        S.COMPILING,
        S.DOWNLOADED,
    ]


def test_cancel_while_waiting_for_a_reply(orch: Orchestrator, engine: FakeEngine) -> None:
    ready(orch, "c1", A)
    release = engine.hold_replies(A)
    reply = Reply(orch)
    assert engine.reply_entered[A].wait(WAIT_S)
    orch.request_model("c1", B)
    worker = step_in_thread(orch)
    wait_until(lambda: orch.snapshot().models[B].note is not None, "B waits")
    orch.cancel(B)
    worker.join(WAIT_S)
    assert not worker.is_alive()
    assert orch.state(B) is S.CANCELED
    assert orch.snapshot().models[B].note is None
    assert orch.requested_model("c1") == A
    release.set()
    reply.join()


# --- rollback ----------------------------------------------------------------------------


def test_a_failed_load_after_a_cold_swap_loads_the_old_model_back(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    ready(orch, "c1", A)
    engine.fail_next(B, ModelLoadError("B's weights are broken: delete it and download again."))
    orch.request_model("c1", B)
    drain(orch)
    assert orch.state(B) is S.FAILED
    assert orch.state(A) is S.READY, "the evicted model is loaded back"
    assert orch.active_model("c1") == A
    assert orch.generate("c1", HELLO, SETTINGS).usage.model == A  # it keeps answering on A
    evicted = [(e.repo_id, e.reason) for e in recorder.of(Evicted)]
    assert evicted == [(A, "evicted")]
    failure = orch.snapshot().models[B].failure
    assert failure is not None
    assert failure.kind == "load"


def test_a_load_canceled_after_its_cold_swap_loads_the_old_model_back(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    ready(orch, "c1", A)
    engine.at("loaded", B, lambda: orch.cancel(B))
    orch.request_model("c1", B)
    drain(orch)
    assert orch.state(B) is S.CANCELED
    assert B in engine.unloads
    assert orch.state(A) is S.READY
    assert orch.active_model("c1") == A


# --- asleep models ------------------------------------------------------------------------


def test_keep_alive_unloads_the_idle_active_model_and_the_next_reply_loads_it(
    orch: Orchestrator, engine: FakeEngine, clock: FakeClock, recorder: Recorder
) -> None:
    orch.set_keep_alive(600)
    ready(orch, "c1", A)
    clock.advance(599)
    assert orch.tick() == ()
    clock.advance(1)
    assert orch.tick() == (A,)
    assert orch.state(A) is S.DOWNLOADED
    assert orch.active_model("c1") == A
    assert orch.snapshot().is_asleep("c1")
    assert [(e.repo_id, e.reason, e.freed_bytes) for e in recorder.of(Evicted)] == [(A, "idle", 1)]
    reply = Reply(orch)
    wait_until(lambda: orch.snapshot().queue == (A,), "the reply queues A")
    assert reply.phases == [PHASE_LOADING]  # the widget shows "Loading model…"
    drain(orch)
    reply.join()
    assert reply.phases == [PHASE_LOADING, PHASE_GENERATING]
    assert reply.result is not None
    assert reply.result.usage.model == A
    assert not orch.snapshot().is_asleep("c1")
    assert [e.repo_id for e in recorder.of(Switched)] == [A]  # announced once


def test_keep_alive_counts_from_the_last_reply_and_never_unloads_under_one(
    orch: Orchestrator, engine: FakeEngine, clock: FakeClock
) -> None:
    orch.set_keep_alive(60)
    ready(orch, "c1", A)
    release = engine.hold_replies(A)
    reply = Reply(orch)
    assert engine.reply_entered[A].wait(WAIT_S)
    clock.advance(3600)
    assert orch.tick() == ()  # in use
    release.set()
    reply.join()
    clock.advance(59)
    assert orch.tick() == ()  # idle for 59 s since the reply ended
    clock.advance(1)
    assert orch.tick() == (A,)


def test_no_keep_alive_keeps_models_loaded(orch: Orchestrator, clock: FakeClock) -> None:
    ready(orch, "c1", A)
    clock.advance(10**6)
    assert orch.tick() == ()
    assert orch.state(A) is S.READY


def test_keep_alive_with_the_worker_thread_unloads_on_time() -> None:
    downloader, engine = FakeDownloader(cached=[A]), FakeEngine()
    orch = Orchestrator(downloader, engine, keep_alive_s=0.2)
    recorder = Recorder()
    orch.subscribe(recorder)
    try:
        orch.open_conversation("c1", model=A)
        recorder.wait_for(lambda ev: any(isinstance(e, Evicted) for e in ev), WAIT_S)
        assert [(e.repo_id, e.reason) for e in recorder.of(Evicted)] == [(A, "idle")]
        assert orch.active_model("c1") == A
        reply = orch.generate("c1", HELLO, SETTINGS)  # the worker loads it again first
        assert reply.usage.model == A
    finally:
        orch.close()


def test_a_reply_waiting_for_its_model_uses_the_model_the_conversation_switched_to(
    orch: Orchestrator, clock: FakeClock, engine: FakeEngine
) -> None:
    engine.capacity = 2
    orch.set_keep_alive(10)
    ready(orch, "c1", A)
    clock.advance(10)
    orch.tick()  # A asleep
    orch.open_conversation("c2", group="g2")
    ready(orch, "c2", B)  # B Ready for someone else
    reply = Reply(orch)
    wait_until(lambda: orch.snapshot().queue == (A,), "the reply queues A")
    orch.request_model("c1", B)  # c1 switches to the Ready B while its reply waits
    reply.join()
    assert reply.result is not None
    assert reply.result.usage.model == B


def test_a_reply_whose_model_cannot_load_again_says_why(
    orch: Orchestrator, engine: FakeEngine, clock: FakeClock
) -> None:
    orch.set_keep_alive(1)
    ready(orch, "c1", A)
    clock.advance(1)
    orch.tick()
    engine.fail_next(A, ModelLoadError("A's config is broken."))
    reply = Reply(orch)
    wait_until(lambda: orch.snapshot().queue == (A,), "the reply queues A")
    drain(orch)
    reply.join()
    assert isinstance(reply.error, ModelUnavailableError)
    assert "could not be loaded again" in str(reply.error)
    assert reply.error.kind == "load"
    assert orch.active_model("c1") == A  # still its model: the next send tries again


def test_a_stopped_reply_stops_waiting_for_its_model(orch: Orchestrator, clock: FakeClock) -> None:
    orch.set_keep_alive(1)
    ready(orch, "c1", A)
    clock.advance(1)
    orch.tick()
    reply = Reply(orch)
    wait_until(lambda: orch.snapshot().queue == (A,), "the reply queues A")
    reply.stop.set()
    reply.join()
    assert reply.result is not None
    assert reply.result.stopped
    assert reply.result.text == ""


# --- explicit unload ----------------------------------------------------------------------


def test_unload_frees_the_model_reports_the_bytes_and_leaves_the_conversation_asleep(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.sizes[A] = 1
    ready(orch, "c1", A)
    result = orch.unload(A)
    assert (result.repo_id, result.unloaded, result.freed_bytes) == (A, True, 1)
    assert orch.state(A) is S.DOWNLOADED
    assert not engine.is_loaded(A)
    assert [(e.repo_id, e.reason, e.freed_bytes) for e in recorder.of(Evicted)] == [
        (A, "unload", 1)
    ]
    assert orch.active_model("c1") == A
    assert orch.unload(A).unloaded is False  # twice: nothing happens


def test_unload_while_a_reply_uses_the_model_is_refused(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    ready(orch, "c1", A)
    release = engine.hold_replies(A)
    reply = Reply(orch)
    assert engine.reply_entered[A].wait(WAIT_S)
    with pytest.raises(ModelBusyError, match="stop the reply"):
        orch.unload(A)
    assert orch.state(A) is S.READY
    release.set()
    reply.join()
    assert orch.unload(A).unloaded


def test_max_loaded_models_evicts_the_least_recently_used(
    downloader: FakeDownloader, clock: FakeClock
) -> None:
    engine = FakeEngine(capacity=100, max_models=2)
    orch = Orchestrator(downloader, engine, start=False, clock=clock)
    try:
        for cid, repo in (("c1", A), ("c2", B), ("c3", C)):
            orch.open_conversation(cid, group=cid)
            orch.request_model(cid, repo)
            drain(orch)
        assert set(engine.loaded) == {B, C}
        assert orch.state(A) is S.DOWNLOADED
        assert orch.active_model("c1") == A  # asleep, not lost
    finally:
        orch.close()


def test_ready_models_say_where_they_sit_and_what_they_take(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    engine.sizes[A] = 1
    ready(orch, "c1", A)
    status = orch.snapshot().models[A]
    assert status.placement == ("CPU",)
    assert status.device_map == {"": "cpu"}
    assert status.memory_bytes == 1
    orch.unload(A)
    status = orch.snapshot().models[A]
    assert (status.placement, status.device_map, status.memory_bytes) == ((), None, None)


# --- tokens --------------------------------------------------------------------------------


def test_a_groups_token_is_used_only_for_its_own_downloads(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chatwidget")
    downloader = FakeDownloader()
    orch = Orchestrator(downloader, engine, start=False)
    events: list[Event] = []
    orch.subscribe(events.append)
    try:
        orch.open_conversation("c1", group="g1")
        orch.open_conversation("c2", group="g2")
        orch.set_token("g1", TOKEN)
        orch.request_model("c1", A)
        drain(orch)
        orch.request_model("c2", B)
        drain(orch)
        assert (A, TOKEN) in downloader.tokens
        assert [t for r, t in downloader.tokens if r == B] == [None, None]  # plan, download
        assert orch.has_token("g1")
        assert not orch.has_token("g2")
        visible = repr(orch.snapshot()) + repr(events) + caplog.text + repr(orch._tokens)
        assert TOKEN not in visible
    finally:
        orch.close()


def test_adding_a_token_retries_the_gated_models_the_group_waits_for(
    engine: FakeEngine,
) -> None:
    downloader = FakeDownloader()
    downloader.fail_next(A, GatedRepoError(f"{A} is gated: add a token."))
    orch = Orchestrator(downloader, engine, start=False)
    try:
        orch.open_conversation("c1", group="g1")
        orch.open_conversation("c2", group="g2")
        orch.request_model("c1", A)
        drain(orch)
        failure = orch.snapshot().models[A].failure
        assert failure is not None
        assert (failure.kind, failure.retryable, failure.action) == ("gated", False, "Add a token")
        assert orch.set_token("g2", "hf_other") == ()  # g2 does not wait for A
        assert orch.set_token("g1", TOKEN) == (A,)
        drain(orch)
        assert orch.active_model("c1") == A
        assert downloader.tokens[-1] == (A, TOKEN)
    finally:
        orch.close()


def test_closing_a_group_closes_its_conversations_and_drops_its_token(
    orch: Orchestrator, downloader: FakeDownloader
) -> None:
    orch.set_token("g1", TOKEN)
    orch.open_conversation("c2", group="g1")
    assert orch.close_group("g1") == ("c1", "c2")
    assert orch.snapshot().conversations == {}
    assert not orch.has_token("g1")
    assert orch.close_group("g1") == ()


def test_a_bad_token_is_refused_clearly(orch: Orchestrator) -> None:
    with pytest.raises(ValueError, match="empty"):
        orch.set_token("g1", "  ")
    with pytest.raises(TypeError, match="text"):
        orch.set_token("g1", 42)  # type: ignore[arg-type]


# --- spec changes ---------------------------------------------------------------------------


def test_a_new_revision_while_downloading_is_refused_not_dropped() -> None:
    downloader, engine = FakeDownloader(), FakeEngine()
    orch = Orchestrator(downloader, engine, start=False)
    orch.open_conversation("c1")
    errors: list[BaseException] = []

    def ask_for_v2() -> None:
        try:
            orch.request_model("c1", ModelSpec(A, revision="v2"))
        except SpecConflictError as exc:
            errors.append(exc)

    downloader.at("download", A, ask_for_v2)
    orch.request_model("c1", ModelSpec(A, revision="v1"))
    drain(orch)
    assert len(errors) == 1
    assert "cancel it first" in str(errors[0])
    assert "'v2'" in str(errors[0])
    assert orch.spec(A).revision == "v1"
    orch.close()


def test_trust_remote_code_counts_as_a_different_spec(orch: Orchestrator) -> None:
    ready(orch, "c1", A)
    with pytest.raises(SpecConflictError, match="trust_remote_code=True"):
        orch.request_model("c1", ModelSpec(A, trust_remote_code=True))
    with pytest.raises(SpecConflictError):
        orch.register(ModelSpec(A, allow_pickle=True))
    orch.unload(A)
    orch.request_model("c1", ModelSpec(A, trust_remote_code=True))  # at rest: applies
    assert orch.spec(A).trust_remote_code


# --- events with no lock held -----------------------------------------------------------------


def test_a_subscriber_may_call_any_public_method_and_close_on_an_eviction(
    downloader: FakeDownloader,
) -> None:
    engine = FakeEngine(capacity=1)
    orch = Orchestrator(downloader, engine)  # with its worker thread
    calls: list[str] = []
    done = threading.Event()

    def subscriber(event: Event) -> None:
        if isinstance(event, Evicted):
            # another thread must get the state lock while we hold the event: nothing is held
            other = threading.Thread(target=lambda: calls.append(repr(orch.snapshot().seq)))
            other.start()
            other.join(WAIT_S)
            calls.append("other thread done" if not other.is_alive() else "BLOCKED")
            orch.tick()
            orch.unload(A)
            orch.active_model("c1")
            orch.close()
            calls.append("closed")
            done.set()

    orch.subscribe(subscriber)
    orch.open_conversation("c1", model=A)
    assert orch.wait_until_idle(WAIT_S)
    orch.request_model("c1", B)
    assert done.wait(WAIT_S), "the subscriber deadlocked"
    assert calls[1:] == ["other thread done", "closed"]


def test_a_subscriber_calling_back_in_from_inside_an_engine_call_does_not_deadlock(
    orch: Orchestrator, engine: FakeEngine
) -> None:
    seen: list[Any] = []

    def subscriber(event: Event) -> None:
        if isinstance(event, Evicted):
            seen.append(orch.snapshot().models[A].state)
            orch.request_model("c1", B)  # a public method, from the worker's delivery

    ready(orch, "c1", A)
    orch.subscribe(subscriber)
    orch.request_model("c1", B)
    drain(orch)
    assert seen == [S.DOWNLOADED]
    assert orch.active_model("c1") == B


def test_a_reply_pauses_downloads_until_its_first_token(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine
) -> None:
    ready(orch, "c1", A)
    seen: list[int] = []
    engine.at("generate", A, lambda: seen.append(downloader.held))
    pieces: list[str] = []
    orch.generate("c1", HELLO, SETTINGS, on_text=pieces.append)
    assert seen == [1]  # held while the reply was starting
    assert (downloader.holds, downloader.held) == (1, 0)  # released at the first text
    assert pieces == ["reply from org/a to hello"]
