"""Sequencing of the orchestrator against fake boundaries, driven step by step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from orch_fakes import FakeDownloader, FakeEngine, Recorder

from chatwidget.catalog import ModelSpec
from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import (
    ConversationExistsError,
    GatedRepoError,
    IllegalTransitionError,
    InvalidRepoIdError,
    ModelLoadError,
    NetworkError,
    NoActiveModelError,
    SpecConflictError,
    UnknownConversationError,
    UnknownModelError,
)
from chatwidget.failure import failure_of
from chatwidget.orchestrator import (
    TRANSITIONS,
    ErrorReported,
    Event,
    Evicted,
    ModelState,
    Orchestrator,
    ProgressChanged,
    StateChanged,
    Switched,
    check_transition,
)
from chatwidget.orchestrator.lifecycle import can_cancel, can_retry

S = ModelState
A, B, C, BASE = "org/a", "org/b", "org/c", "org/base"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def downloader() -> FakeDownloader:
    return FakeDownloader()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def orch(downloader: FakeDownloader, engine: FakeEngine) -> Iterator[Orchestrator]:
    """A stepped orchestrator (start=False) with one on-screen conversation "c1"."""
    orchestrator = Orchestrator(downloader, engine, start=False)
    orchestrator.open_conversation("c1")
    yield orchestrator
    orchestrator.close()


@pytest.fixture
def recorder(orch: Orchestrator) -> Recorder:
    recorder = Recorder()
    orch.subscribe(recorder)
    return recorder


def drain(orch: Orchestrator) -> int:
    steps = 0
    while orch.step():
        steps += 1
    return steps


def states(recorder: Recorder, repo_id: str) -> list[ModelState]:
    return [e.new for e in recorder.of(StateChanged) if e.repo_id == repo_id]


def switches(recorder: Recorder) -> list[tuple[str, str]]:
    return [(e.conversation_id, e.repo_id) for e in recorder.of(Switched)]


def with_active_base(orch: Orchestrator, downloader: FakeDownloader, cid: str = "c1") -> None:
    """Give ``cid`` the Ready model BASE (cached, loaded through the queue)."""
    downloader.cached.add(BASE)
    orch.request_model(cid, BASE)
    drain(orch)
    assert orch.active_model(cid) == BASE


# --- lifecycle -------------------------------------------------------------------------


def test_uncached_model_goes_queued_downloading_compiling_ready_and_switches(
    orch: Orchestrator, recorder: Recorder
) -> None:
    assert orch.request_model("c1", A) is S.QUEUED
    assert orch.state(A) is S.QUEUED
    assert orch.snapshot().queue == (A,)
    assert orch.step() is True
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.COMPILING, S.READY]
    assert switches(recorder) == [("c1", A)]
    assert orch.active_model("c1") == A
    assert orch.requested_model("c1") == A
    assert orch.step() is False


def test_cached_model_skips_downloading(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    downloader.cached.add(A)
    orch.register(ModelSpec(A))
    assert orch.state(A) is S.DOWNLOADED
    orch.request_model("c1", A)
    drain(orch)
    assert states(recorder, A) == [S.QUEUED, S.COMPILING, S.READY]
    assert downloader.calls == []


def test_register_reads_state_from_cache_and_engine(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine
) -> None:
    downloader.cached.update({A, B})
    engine.preload(B)
    for repo_id in (A, B, C):
        orch.register(ModelSpec(repo_id))
    assert [orch.state(r) for r in (A, B, C)] == [S.DOWNLOADED, S.READY, S.NOT_DOWNLOADED]
    assert [orch.state(r).label for r in (A, B, C)] == ["Downloaded", "Ready", "Not downloaded"]


def test_queue_runs_first_in_first_out(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine
) -> None:
    orch.open_conversation("c2")
    orch.open_conversation("c3")
    orch.request_model("c1", C)
    orch.request_model("c2", A)
    orch.request_model("c3", B)
    assert orch.snapshot().queue == (C, A, B)
    assert drain(orch) == 3
    assert downloader.calls == [C, A, B]
    assert [repo for repo, _ in engine.loads] == [C, A, B]


def test_requesting_a_ready_model_switches_at_once_without_queueing(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    drain(orch)
    assert orch.active_model("c1") == B
    calls_before = list(downloader.calls)
    assert orch.request_model("c1", A) is S.READY
    assert orch.active_model("c1") == A
    assert switches(recorder)[-1] == ("c1", A)
    assert orch.snapshot().queue == ()
    assert downloader.calls == calls_before


def test_requesting_a_model_on_its_way_only_changes_intent(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    orch.open_conversation("c2", group="other")
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    orch.request_model("c1", A)
    orch.request_model("c2", A)
    assert orch.snapshot().queue == (A, B)
    assert states(recorder, A) == [S.QUEUED]
    drain(orch)
    assert downloader.calls == [A, B]
    assert orch.active_model("c1") == A
    assert orch.active_model("c2") == A


def test_requesting_the_active_model_clears_a_pending_target(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    assert orch.requested_model("c1") == A
    orch.request_model("c1", BASE)
    assert orch.requested_model("c1") == BASE
    drain(orch)
    assert orch.active_model("c1") == BASE
    assert orch.state(A) is S.READY
    assert switches(recorder) == [("c1", BASE)]


def test_progress_from_the_download_is_published_and_kept_in_the_snapshot(
    orch: Orchestrator, recorder: Recorder
) -> None:
    orch.request_model("c1", A)
    drain(orch)
    progress = [e.progress for e in recorder.of(ProgressChanged)]
    assert [(p.bytes_done, p.final) for p in progress] == [(0, False), (100, True)]
    status = orch.snapshot().models[A]
    assert status.progress is not None
    assert status.progress.final


def test_every_event_has_the_next_seq(orch: Orchestrator, recorder: Recorder) -> None:
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    drain(orch)
    seqs = [e.seq for e in recorder.events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert orch.snapshot().seq == seqs[-1]


# --- the stale-completion guard ------------------------------------------------------


def test_stale_completion_a_then_b_does_not_switch_to_a(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    orch.step()
    assert orch.state(A) is S.READY
    assert orch.active_model("c1") == BASE
    assert switches(recorder) == [("c1", BASE)]
    orch.step()
    assert orch.active_model("c1") == B
    assert switches(recorder) == [("c1", BASE), ("c1", B)]


def test_a_then_b_then_a_activates_a_and_leaves_b_ready(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    orch.request_model("c1", A)
    drain(orch)
    assert orch.active_model("c1") == A
    assert orch.state(B) is S.READY
    assert switches(recorder) == [("c1", BASE), ("c1", A)]


def test_change_of_intent_away_while_compiling_is_honoured(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    engine.during[A] = [lambda: orch.request_model("c1", BASE)]
    orch.step()
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.COMPILING, S.READY]
    assert orch.active_model("c1") == BASE
    assert switches(recorder) == [("c1", BASE)]


def test_change_of_intent_towards_a_compiling_model_switches_when_ready(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    orch.request_model("c1", BASE)  # A is now a stale item
    engine.during[A] = [lambda: orch.request_model("c1", A)]
    orch.step()
    assert orch.active_model("c1") == A
    assert switches(recorder) == [("c1", BASE), ("c1", A)]


def test_two_conversations_with_different_targets_each_get_their_own(
    orch: Orchestrator, recorder: Recorder
) -> None:
    orch.open_conversation("c2")  # same group, off screen
    orch.request_model("c1", A)
    orch.request_model("c2", B)
    drain(orch)
    assert orch.active_model("c1") == A
    assert orch.active_model("c2") == B
    assert switches(recorder) == [("c1", A)]  # c2 is off screen: not announced yet


def test_inactive_conversation_gets_its_model_when_the_user_returns(
    orch: Orchestrator, recorder: Recorder
) -> None:
    orch.open_conversation("c2")
    orch.request_model("c2", B)
    drain(orch)
    assert switches(recorder) == []
    orch.set_active_conversation("c2")
    assert orch.active_conversation() == "c2"
    assert switches(recorder) == [("c2", B)]
    orch.set_active_conversation("c1")
    orch.set_active_conversation("c2")
    assert switches(recorder) == [("c2", B)]  # announced once


def test_stale_completion_that_does_not_fit_stops_at_downloaded(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.capacity = 1
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    orch.request_model("c1", BASE)
    drain(orch)
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.DOWNLOADED]
    assert engine.is_loaded(BASE)
    assert not engine.is_loaded(A)
    assert orch.active_model("c1") == BASE


def test_stale_completion_that_fits_loads_keeping_every_active_model(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine
) -> None:
    orch.open_conversation("c2", group="g2")
    with_active_base(orch, downloader, "c2")
    orch.request_model("c1", A)
    orch.request_model("c1", B)  # A is stale
    drain(orch)
    assert engine.loads[-2] == (A, (BASE,))
    assert orch.state(A) is S.READY


def test_wanted_load_may_cold_swap_the_conversations_own_active_model(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.capacity = 1
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    drain(orch)
    assert engine.loads[-1] == (A, ())
    assert orch.active_model("c1") == A
    assert orch.state(BASE) is S.DOWNLOADED
    assert [e.repo_id for e in recorder.of(Evicted)] == [BASE]
    ready = [e for e in recorder.of(StateChanged) if e.new is S.READY and e.repo_id == A]
    assert ready[0].cold_swap is True
    assert orch.snapshot().models[A].cold_swap is True


def test_wanted_load_evicts_other_conversations_models_last(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine
) -> None:
    engine.capacity = 2
    orch.open_conversation("c2", group="g2")
    with_active_base(orch, downloader, "c1")
    orch.request_model("c2", B)
    drain(orch)
    orch.request_model("c1", A)
    drain(orch)
    decision = engine.decisions[-1]
    assert decision["repo_id"] == A
    assert decision["prefer"] == {B}  # c2's model goes last
    assert decision["evict"] == (BASE,)  # c1's own old model goes first (a cold swap)
    assert engine.is_loaded(B)
    assert not engine.is_loaded(BASE)
    assert orch.active_model("c2") == B
    assert orch.active_model("c1") == A


# --- cancel ---------------------------------------------------------------------------


def test_cancel_queued_item_removes_it_and_restores_the_target(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    orch.cancel(B)
    assert orch.state(B) is S.CANCELED
    assert orch.snapshot().queue == (A,)
    assert orch.requested_model("c1") == BASE
    drain(orch)
    assert downloader.calls == [A]
    assert orch.active_model("c1") == BASE


def test_cancel_downloading_item_sets_the_downloaders_cancel(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    downloader.during[A] = [lambda: orch.cancel(A)]
    orch.step()
    assert downloader.canceled == [A]
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.CANCELED]
    assert orch.requested_model("c1") == BASE
    assert orch.active_model("c1") == BASE
    assert recorder.of(ErrorReported) == []


def test_cancel_compiling_item_discards_and_unloads_it_when_the_load_returns(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    engine.during[A] = [lambda: orch.cancel(A)]
    orch.step()
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.COMPILING, S.CANCELED]
    assert engine.unloads == [A]
    assert not engine.is_loaded(A)
    assert orch.active_model("c1") == BASE
    assert switches(recorder) == [("c1", BASE)]


@pytest.mark.parametrize("at_rest", [S.NOT_DOWNLOADED, S.READY])
def test_cancel_of_a_model_not_in_flight_changes_nothing(
    orch: Orchestrator, recorder: Recorder, at_rest: ModelState
) -> None:
    orch.register(ModelSpec(A))
    if at_rest is S.READY:
        orch.request_model("c1", A)
        drain(orch)
    before = len(recorder.events)
    orch.cancel(A)
    assert orch.state(A) is at_rest
    assert len(recorder.events) == before


# --- retry and failures ----------------------------------------------------------------


def test_failed_download_is_reported_and_the_queue_goes_on(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    orch.open_conversation("c2", group="g2")
    downloader.fail_next(A, NetworkError("The hub could not be reached: check the network."))
    orch.request_model("c1", A)
    orch.request_model("c2", B)
    drain(orch)
    assert orch.state(A) is S.FAILED
    assert orch.state(B) is S.READY
    status = orch.snapshot().models[A]
    assert status.error == "The hub could not be reached: check the network."
    errors = recorder.of(ErrorReported)
    assert [(e.source, e.repo_id, e.message) for e in errors] == [
        ("download", A, "The hub could not be reached: check the network.")
    ]


def test_failed_load_is_reported_and_the_queue_goes_on(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    orch.open_conversation("c2", group="g2")
    engine.fail_next(A, ModelLoadError("config.json is broken: delete the model and retry."))
    orch.request_model("c1", A)
    orch.request_model("c2", B)
    drain(orch)
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.COMPILING, S.FAILED]
    assert [e.source for e in recorder.of(ErrorReported)] == ["load"]
    assert orch.active_model("c2") == B


def test_retry_after_failure_requeues_at_the_back_and_keeps_the_error_in_history(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    orch.open_conversation("c2", group="g2")
    downloader.fail_next(A, NetworkError("connection reset: retry"))
    orch.request_model("c1", A)
    drain(orch)
    orch.request_model("c2", B)
    orch.retry(A)
    assert orch.snapshot().queue == (B, A)
    assert orch.snapshot().models[A].error is None
    drain(orch)
    assert states(recorder, A) == [
        *[S.QUEUED, S.DOWNLOADING, S.FAILED],
        *[S.QUEUED, S.DOWNLOADING, S.COMPILING, S.READY],
    ]
    assert orch.snapshot().models[A].history == ("connection reset: retry",)
    assert orch.active_model("c1") == A  # the failed target was still wanted


def test_retry_after_cancel_reaches_ready_without_switching(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    with_active_base(orch, downloader)
    orch.request_model("c1", A)
    orch.cancel(A)
    orch.retry(A)
    drain(orch)
    assert orch.state(A) is S.READY
    assert orch.active_model("c1") == BASE
    assert switches(recorder) == [("c1", BASE)]


def test_retry_of_a_model_that_did_not_fail_changes_nothing(
    orch: Orchestrator, recorder: Recorder
) -> None:
    orch.request_model("c1", A)
    before = len(recorder.events)
    orch.retry(A)
    assert orch.snapshot().queue == (A,)
    assert len(recorder.events) == before


def test_raising_subscriber_is_reported_and_does_not_stop_the_worker(
    orch: Orchestrator, recorder: Recorder
) -> None:
    def broken(event: object) -> None:
        if isinstance(event, Switched):
            raise ValueError("subscriber bug")

    orch.subscribe(broken)
    orch.request_model("c1", A)
    drain(orch)
    orch.request_model("c1", B)
    drain(orch)
    assert orch.active_model("c1") == B
    reports = [(e.source, e.message) for e in recorder.of(ErrorReported)]
    assert reports == [("subscriber", "subscriber bug")] * 2
    seqs = [e.seq for e in recorder.events]
    assert seqs == sorted(seqs)


def test_unsubscribed_callback_gets_no_more_events(orch: Orchestrator) -> None:
    got: list[object] = []
    unsubscribe = orch.subscribe(got.append)
    orch.request_model("c1", A)
    unsubscribe()
    unsubscribe()
    drain(orch)
    assert len(got) == 1


def test_eviction_of_a_ready_model_makes_it_downloaded_and_leaves_it_asleep(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    orch.request_model("c1", A)
    drain(orch)
    engine.evict(A)
    assert orch.state(A) is S.DOWNLOADED
    assert orch.active_model("c1") == A  # still its model: it loads again on the next send
    assert orch.snapshot().is_asleep("c1")
    assert [(e.repo_id, e.reason) for e in recorder.of(Evicted)] == [(A, "evicted")]
    orch.request_model("c1", A)
    drain(orch)
    assert orch.state(A) is S.READY
    assert not orch.snapshot().is_asleep("c1")
    assert switches(recorder) == [("c1", A)]  # it never changed model: announced once


# --- chat and input errors --------------------------------------------------------------


def test_generate_runs_on_the_active_model(orch: Orchestrator, engine: FakeEngine) -> None:
    orch.request_model("c1", A)
    drain(orch)
    chunks: list[str] = []
    result = orch.generate("c1", HELLO, GenerationSettings(), on_text=chunks.append)
    assert result.text == "reply from org/a to hello"
    assert chunks == [result.text]
    assert engine.generated == [A]


def test_generate_without_an_active_model_says_what_to_do(orch: Orchestrator) -> None:
    with pytest.raises(NoActiveModelError, match="wait until it is Ready"):
        orch.generate("c1", HELLO, GenerationSettings())


def test_bad_input_raises_clear_errors_and_changes_nothing(
    orch: Orchestrator, recorder: Recorder
) -> None:
    with pytest.raises(UnknownConversationError, match="open_conversation"):
        orch.request_model("nope", A)
    with pytest.raises(KeyError):
        orch.active_model("nope")
    with pytest.raises(InvalidRepoIdError, match="org/name"):
        orch.request_model("c1", "not a repo id")
    with pytest.raises(ConversationExistsError):
        orch.open_conversation("c1")
    with pytest.raises(UnknownModelError, match="register it"):
        orch.cancel(A)
    with pytest.raises(UnknownConversationError, match="group='default'"):
        orch.set_active_conversation("c1", group="elsewhere")
    assert recorder.events == []
    assert orch.snapshot().models == {}
    assert orch.requested_model("c1") is None


def test_step_is_refused_when_a_worker_thread_runs(
    downloader: FakeDownloader, engine: FakeEngine
) -> None:
    orch = Orchestrator(downloader, engine)
    try:
        with pytest.raises(RuntimeError, match="start=False"):
            orch.step()
    finally:
        orch.close()


def test_closing_a_conversation_keeps_its_model_and_frees_the_group(
    orch: Orchestrator,
) -> None:
    orch.request_model("c1", A)
    drain(orch)
    orch.close_conversation("c1")
    assert orch.active_conversation() is None
    assert orch.state(A) is S.READY
    assert "c1" not in orch.snapshot().conversations


# --- lifecycle table ------------------------------------------------------------------


def test_retry_is_offered_only_where_it_can_help() -> None:
    gated = failure_of(GatedRepoError("gated"))
    flaky = failure_of(NetworkError("reset"))
    assert not can_retry(S.FAILED, gated)
    assert gated.action == "Add a token"
    assert can_retry(S.FAILED, flaky)
    assert flaky.action == "Retry"
    assert can_retry(S.CANCELED, None)
    assert not can_retry(S.READY, None)
    assert [s for s in ModelState if can_cancel(s)] == [
        S.QUEUED,
        S.DOWNLOADING,
        S.COMPILING,
        S.CONNECTING,
    ]


def test_illegal_transition_raises() -> None:
    with pytest.raises(IllegalTransitionError, match="'Downloaded' -> 'Ready'"):
        check_transition(A, S.DOWNLOADED, S.READY)
    with pytest.raises(RuntimeError):
        check_transition(A, S.READY, S.COMPILING)


def test_every_state_has_a_row_and_ready_is_reached_only_from_compiling_or_connecting() -> None:
    assert set(TRANSITIONS) == set(ModelState)
    ready_from = [s for s, targets in TRANSITIONS.items() if S.READY in targets]
    assert ready_from == [S.COMPILING, S.CONNECTING]
    assert [s for s, targets in TRANSITIONS.items() if S.DOWNLOADING in targets] == [S.QUEUED]


def test_same_calls_and_completions_give_the_same_events() -> None:
    def run() -> list[Event]:
        downloader = FakeDownloader(cached=[C])
        downloader.fail_next(B, NetworkError("flaky"))
        orch = Orchestrator(downloader, FakeEngine(capacity=2), start=False)
        recorder = Recorder()
        orch.subscribe(recorder)
        orch.open_conversation("c1")
        orch.open_conversation("c2")
        orch.request_model("c1", A)
        orch.request_model("c2", B)
        orch.request_model("c1", C)
        orch.step()
        orch.retry(B)
        drain(orch)
        orch.set_active_conversation("c2")
        orch.close()
        return recorder.events

    first = run()
    assert first == run()
    assert len(first) > 10


def test_a_new_spec_for_a_model_at_rest_is_used_by_the_next_download(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine
) -> None:
    orch.register(ModelSpec(A, revision="v1"))
    orch.request_model("c1", ModelSpec(A, revision="v2"))
    assert orch.spec(A).revision == "v2"
    orch.request_model("c1", ModelSpec(A, revision="v3"))  # still queued: v3 applies
    assert orch.spec(A).revision == "v3"
    drain(orch)
    assert downloader.specs[-1].revision == "v3"
    with pytest.raises(SpecConflictError, match=r"chat.unload\('org/a'\)"):
        orch.request_model("c1", ModelSpec(A, revision="v4"))  # Ready: refused, not dropped
    assert orch.spec(A).revision == "v3"
    orch.request_model("c1", ModelSpec(A, revision="v3", name="A, renamed"))  # names apply
    assert orch.spec(A).name == "A, renamed"
    with pytest.raises(UnknownModelError):
        orch.spec(B)


def test_off_screen_conversation_that_lost_its_model_is_told_when_it_gets_one_again(
    orch: Orchestrator, engine: FakeEngine, recorder: Recorder
) -> None:
    orch.open_conversation("c2")
    orch.request_model("c1", B)
    orch.request_model("c1", A)
    drain(orch)
    orch.set_active_conversation("c2")
    orch.request_model("c2", A)  # c2 on screen: told A
    orch.set_active_conversation("c1")
    orch.request_model("c2", B)  # c2 off screen: now on B, not yet told
    engine.evict(B)  # B unloaded before c2 was told: c2 keeps it, asleep
    assert orch.active_model("c2") == B
    orch.request_model("c2", A)  # off screen again, back on A (Ready)
    orch.set_active_conversation("c2")
    # c2 was last told A, and it is on A: nothing to announce
    assert switches(recorder) == [("c1", A), ("c2", A)]
    orch.request_model("c2", B)  # on screen: B is asleep, so it is queued, then announced
    drain(orch)
    assert switches(recorder) == [("c1", A), ("c2", A), ("c2", B)]


def test_model_that_cannot_fit_in_memory_fails_before_the_first_byte(
    orch: Orchestrator, downloader: FakeDownloader, engine: FakeEngine, recorder: Recorder
) -> None:
    engine.capacity = 10
    engine.sizes[A] = 11
    orch.request_model("c1", A)
    drain(orch)
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.FAILED]
    assert downloader.planned == [A]
    assert downloader.calls == []  # nothing fetched
    assert "memory" in (orch.snapshot().models[A].error or "")


def test_model_that_cannot_fit_on_disk_fails_before_the_first_byte(
    orch: Orchestrator, downloader: FakeDownloader, recorder: Recorder
) -> None:
    downloader.disk_free[A] = 10  # the listing says 100 bytes are missing
    orch.request_model("c1", A)
    orch.request_model("c1", B)
    drain(orch)
    assert states(recorder, A) == [S.QUEUED, S.DOWNLOADING, S.FAILED]
    assert downloader.calls == [B]  # the next item went on
    error = orch.snapshot().models[A].error or ""
    assert "disk" in error
    assert "Free some space" in error
