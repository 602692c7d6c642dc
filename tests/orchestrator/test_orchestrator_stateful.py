"""Hypothesis interleaves requests, cancels, retries, switches, completions, failures,
replies in flight, unloads, ``keep_alive`` on a stepped clock and a memory budget with a
model limit.

After every step it checks the issue's invariants against a small reference model of
intent kept by the test: no event lost, the queue in request order (a model loaded back
after a failed cold swap goes first), intent as requested, Ready exactly when loaded,
never more resident than the budget or the model limit, never a model evicted under a
reply, a stale model loaded only if it fits beside every active model, rollback after a
failed or canceled cold swap, no expired idle model after a tick.

Examples per run: ``CHATWIDGET_HYPOTHESIS_EXAMPLES`` (default 200); set it to 10000 for a
deep run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from orch_fakes import FakeClock, FakeDownloader, FakeEngine

from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import ModelBusyError, ModelLoadError, NetworkError
from chatwidget.orchestrator import (
    ErrorReported,
    Event,
    Evicted,
    ModelState,
    NoteChanged,
    Orchestrator,
    ProgressChanged,
    StateChanged,
    Switched,
)
from chatwidget.orchestrator.lifecycle import IN_FLIGHT, WORKING

S = ModelState
MODELS = ("org/m0", "org/m1", "org/m2", "org/m3")
SIZES = {"org/m0": 1, "org/m1": 1, "org/m2": 2, "org/m3": 1}
CAPACITIES = (1, 2, 3)  # the memory budget, in model-size units
MODEL_LIMITS = (None, 1, 2)  # max_loaded_models
GROUPS = {"c0": "g0", "c1": "g0", "c2": "g1"}
CONVERSATIONS = tuple(GROUPS)
EXAMPLES = int(os.environ.get("CHATWIDGET_HYPOTHESIS_EXAMPLES", "200"))
DEADLINE_S = 20.0
HELLO = [{"role": "user", "content": "hello"}]

models = st.sampled_from(MODELS)
conversations = st.sampled_from(CONVERSATIONS)
# Things a user does while the worker is busy downloading or loading.
user_actions = st.lists(
    st.one_of(
        st.tuples(st.just("request"), conversations, models),
        st.tuples(st.just("cancel"), models),
        st.tuples(st.just("switch"), conversations),
        st.tuples(st.just("retry"), models),
        st.tuples(st.just("unload"), models),
    ),
    max_size=2,
)


def _wait(predicate: Callable[[], bool], what: str) -> None:
    pause = threading.Event()
    for _ in range(int(DEADLINE_S / 0.002)):
        if predicate():
            return
        pause.wait(0.002)
    raise AssertionError(f"timed out waiting until {what}")


class OrchestratorMachine(RuleBasedStateMachine):
    """Drives a stepped orchestrator and mirrors the expected intent per conversation."""

    @initialize(capacity=st.sampled_from(CAPACITIES), max_models=st.sampled_from(MODEL_LIMITS))
    def start(self, capacity: int, max_models: int | None) -> None:
        self.capacity, self.max_models = capacity, max_models
        self.downloader = FakeDownloader(cached=["org/m0"])
        self.engine = FakeEngine(capacity=capacity, sizes=SIZES, max_models=max_models)
        self.clock = FakeClock()
        self.orch = Orchestrator(self.downloader, self.engine, start=False, clock=self.clock)
        self.last_seq = 0
        self.expected_queue: list[str] = []
        self.wanted: dict[str, str | None] = dict.fromkeys(CONVERSATIONS)
        self.active: dict[str, str | None] = dict.fromkeys(CONVERSATIONS)
        self.announced: dict[str, str | None] = dict.fromkeys(CONVERSATIONS)
        self.on_screen: dict[str, str] = {}
        self.replies: dict[str, tuple[threading.Thread, str]] = {}  # cid -> (thread, model)
        self.loading: str | None = None  # the model whose load runs in this step
        self.load_evicted: list[str] = []  # models that load evicted, not queued again yet
        self.load_evicted_all: list[str] = []  # every model that load evicted
        self.load_outcome: ModelState | None = None
        # Assertions raised inside a subscriber or a fake's hook would be contained by the
        # orchestrator (that is its job), so they are recorded and re-raised by an invariant.
        self.violations: list[AssertionError] = []
        self.orch.subscribe(self._recorded(self.on_event))
        for cid, group in GROUPS.items():
            self.on_screen.setdefault(group, cid)
            self.orch.open_conversation(cid, group=group)

    def teardown(self) -> None:
        if hasattr(self, "orch"):
            for gate in self.engine.reply_gates.values():
                gate.set()
            for thread, _repo in self.replies.values():
                thread.join(DEADLINE_S)
            self.orch.close()

    def _recorded(self, check: Callable[..., None]) -> Callable[..., None]:
        def run(*args: object) -> None:
            try:
                check(*args)
            except AssertionError as exc:
                self.violations.append(exc)

        return run

    # --- the reference model, driven by events -----------------------------------------

    def on_event(self, event: Event) -> None:
        assert event.seq == self.last_seq + 1, "an event was lost, duplicated or reordered"
        self.last_seq = event.seq
        if isinstance(event, StateChanged):
            self._on_state(event)
        elif isinstance(event, Switched):
            cid, repo = event.conversation_id, event.repo_id
            assert self.on_screen[GROUPS[cid]] == cid, "switch announced off screen"
            assert self.active[cid] == repo, "switch to a model that is not the latest target"
            assert self.announced[cid] != repo, "switch announced twice"
            self.announced[cid] = repo
        elif isinstance(event, Evicted):
            held = {repo for _t, repo in self.replies.values()}
            assert event.repo_id not in held, f"{event.repo_id} unloaded under its reply"
            if self.loading is not None and event.reason == "evicted":
                self.load_evicted.append(event.repo_id)
                self.load_evicted_all.append(event.repo_id)
        else:
            assert isinstance(event, ErrorReported | ProgressChanged | NoteChanged)
            assert not (isinstance(event, ErrorReported) and event.source == "worker")

    def _on_state(self, event: StateChanged) -> None:
        repo = event.repo_id
        if event.new is S.QUEUED:
            if repo in self.load_evicted and self.load_outcome in (S.FAILED, S.CANCELED):
                self.load_evicted.remove(repo)
                self.expected_queue.insert(0, repo)  # loaded back first: a rollback
            else:
                self.expected_queue.append(repo)
        elif event.old is S.QUEUED:
            if event.new is S.CANCELED:
                self.expected_queue.remove(repo)
            else:
                assert self.expected_queue[0] == repo, "work did not start in request order"
                self.expected_queue.pop(0)
        if event.new is S.COMPILING:
            self.loading, self.load_outcome = repo, None
            self.load_evicted, self.load_evicted_all = [], []
        elif event.old is S.COMPILING and repo == self.loading:
            self.load_outcome = event.new
        if event.new is S.DOWNLOADED and event.old is not S.READY:
            assert self._fit_refused(repo), f"{repo} stopped at Downloaded though it fits"
        if event.new is S.READY:
            for cid in CONVERSATIONS:
                if self.wanted[cid] == repo:
                    self.active[cid] = repo
        elif event.new is S.CANCELED:
            for cid in CONVERSATIONS:
                if self.wanted[cid] == repo and self.active[cid] != repo:
                    self.wanted[cid] = self.active[cid]
        # READY -> DOWNLOADED (evicted, idle, unloaded): conversations keep it, asleep

    def _fit_refused(self, repo: str) -> bool:
        """A stale model stops at Downloaded only if it would push out a model in use."""
        held = {r for _t, r in self.replies.values()}
        keep = {r for r in (*self.active.values(), *held) if r is not None and r != repo}
        resident = [r for r in keep if r in self.engine.loaded]
        kept = sum(SIZES[r] for r in resident)
        too_many = self.max_models is not None and len(resident) + 1 > self.max_models
        return kept + SIZES[repo] > self.capacity or too_many

    # --- user actions ---------------------------------------------------------------------

    def do(self, action: tuple[str, ...]) -> None:
        kind, *args = action
        if kind == "request":
            self._request(args[0], args[1])
        elif kind == "cancel":
            self._cancel(args[0])
        elif kind == "retry":
            self._retry(args[0])
        elif kind == "unload":
            self._unload(args[0])
        else:
            self._switch(args[0])

    def _known(self, repo: str) -> bool:
        return repo in self.orch.snapshot().models

    def _request(self, cid: str, repo: str) -> None:
        self.wanted[cid] = repo
        if self._known(repo) and self.orch.state(repo) is S.READY:
            self.active[cid] = repo
        self.orch.request_model(cid, repo)

    def _cancel(self, repo: str) -> None:
        if self._known(repo):
            self.orch.cancel(repo)

    def _retry(self, repo: str) -> None:
        if self._known(repo):
            self.orch.retry(repo)

    def _unload(self, repo: str) -> None:
        if not self._known(repo):
            return
        held = any(r == repo for _t, r in self.replies.values())
        try:
            result = self.orch.unload(repo)
        except ModelBusyError:
            assert held, f"unload of {repo} refused though no reply uses it"
            return
        assert not held, f"{repo} unloaded under its reply"
        if result.unloaded:
            assert not self.engine.is_loaded(repo)

    def _switch(self, cid: str) -> None:
        self.on_screen[GROUPS[cid]] = cid
        self.orch.set_active_conversation(cid, group=GROUPS[cid])

    @rule(cid=conversations, repo=models)
    def request(self, cid: str, repo: str) -> None:
        self._request(cid, repo)

    @rule(repo=models)
    def cancel(self, repo: str) -> None:
        self._cancel(repo)

    @rule(repo=models)
    def retry(self, repo: str) -> None:
        self._retry(repo)

    @rule(repo=models)
    def unload(self, repo: str) -> None:
        self._unload(repo)

    @rule(cid=conversations)
    def switch_conversation(self, cid: str) -> None:
        self._switch(cid)

    @rule(repo=models)
    def fail_next_download(self, repo: str) -> None:
        self.downloader.fail_next(repo, NetworkError(f"{repo}: connection reset, retry"))

    @rule(repo=models)
    def fail_next_load(self, repo: str) -> None:
        self.engine.fail_next(repo, ModelLoadError(f"{repo}: broken config, retry"))

    @rule(repo=models)
    def pool_evicts(self, repo: str) -> None:
        held = any(r == repo for _t, r in self.replies.values())
        if self.engine.is_loaded(repo) and not held:
            self.engine.evict(repo)

    @rule(seconds=st.sampled_from([None, 0, 5, 30]))
    def set_keep_alive(self, seconds: float | None) -> None:
        self.orch.set_keep_alive(seconds)

    @rule(seconds=st.sampled_from([1, 5, 30]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def idle_timer(self) -> None:
        self.orch.tick()
        keep_alive = self.orch.keep_alive_s
        if keep_alive is None:
            return
        snapshot = self.orch.snapshot()
        held = {r for _t, r in self.replies.values()}
        for repo, status in snapshot.models.items():
            if status.state is S.READY and repo not in held and status.last_used is not None:
                idle = self.clock() - status.last_used
                assert idle < keep_alive, f"{repo} idle for {idle} s after the tick"

    @rule(cid=conversations)
    def start_reply(self, cid: str) -> None:
        repo = self.orch.snapshot().conversations[cid].active_model
        if cid in self.replies or repo is None or self.orch.state(repo) is not S.READY:
            return
        self.engine.hold_replies(repo)
        thread = threading.Thread(
            target=self.orch.generate, args=(cid, HELLO, GenerationSettings()), daemon=True
        )
        thread.start()
        entered = self.engine.reply_entered[repo]
        _wait(entered.is_set, f"the reply on {repo} started")
        self.replies[cid] = (thread, repo)

    @rule(cid=conversations)
    def end_reply(self, cid: str) -> None:
        if cid in self.replies:
            self._end_replies_on(self.replies[cid][1])

    def _end_replies_on(self, repo: str) -> None:
        # forget them first: once the gate opens, the worker may rightly unload the model
        ending = [cid for cid, (_t, model) in self.replies.items() if model == repo]
        threads = [self.replies.pop(cid)[0] for cid in ending]
        self.engine.reply_gates.pop(repo).set()
        for thread in threads:
            thread.join(DEADLINE_S)
            assert not thread.is_alive(), "a reply did not end"

    @rule(
        before=user_actions,
        reply_in=st.one_of(st.none(), conversations),
        load_fails=st.booleans(),
        while_downloading=user_actions,
        while_compiling=user_actions,
    )
    def worker_completes_next_item(
        self,
        before: list[tuple[str, ...]],
        reply_in: str | None,
        load_fails: bool,
        while_downloading: list[tuple[str, ...]],
        while_compiling: list[tuple[str, ...]],
    ) -> None:
        if reply_in is not None:  # a reply streams there while the worker goes on
            self.start_reply(reply_in)
        for action in before:
            self.do(action)
        head = self.orch.snapshot().queue[:1]
        if head and load_fails:  # after it evicted what it needed: a rollback is due
            self.engine.fail_next(head[0], ModelLoadError(f"{head[0]}: broken weights"))
        if head:
            repo = head[0]
            self.downloader.during[repo] = [
                self._recorded(self._check_one_working),
                *[self._bind(a) for a in while_downloading],
            ]
            self.engine.during[repo] = [
                self._recorded(self._check_one_working),
                *[self._bind(a) for a in while_compiling],
            ]
        decisions_before = len(self.engine.decisions)
        self.loading, self.load_outcome = None, None
        self.load_evicted, self.load_evicted_all = [], []
        outcome: list[bool] = []
        worker = threading.Thread(target=lambda: outcome.append(self.orch.step()), daemon=True)
        worker.start()

        def settled() -> bool:
            if not worker.is_alive():
                return True
            models = self.orch.snapshot().models.values()
            return any((m.note or "").startswith("waiting for the reply") for m in models)

        _wait(settled, "the step ended or waited for a reply")
        if worker.is_alive():  # a cold swap waits for replies in flight: check, then end them
            self._check_waiting_for_replies()
            for repo_held in sorted({r for _t, r in self.replies.values()}):
                self._end_replies_on(repo_held)
            worker.join(DEADLINE_S)
            assert not worker.is_alive(), "the step did not end once the replies ended"
        assert outcome == [bool(head)]
        self.downloader.during.clear()
        self.engine.during.clear()
        for decision in self.engine.decisions[decisions_before:]:
            self._check_decision(decision)
        self._check_rollback()
        # a rollback happens within the step that failed; later requests queue at the back
        self.loading, self.load_outcome = None, None
        self.load_evicted, self.load_evicted_all = [], []

    def _bind(self, action: tuple[str, ...]) -> Callable[[], None]:
        """The user acts from the kernel's main thread while the worker is in a call: run the
        action in another thread (as the main thread would) and wait for it."""

        def act() -> None:
            failures: list[BaseException] = []

            def run() -> None:
                try:
                    self.do(action)
                except BaseException as exc:
                    failures.append(exc)

            user = threading.Thread(target=run, name="user")
            user.start()
            user.join(DEADLINE_S)
            assert not user.is_alive(), f"{action} blocked while the worker was busy"
            if failures:
                raise failures[0]

        return act

    def _check_one_working(self) -> None:
        snapshot = self.orch.snapshot()
        working = [r for r, m in snapshot.models.items() if m.state in WORKING]
        assert len(working) == 1, f"more than one item working: {working}"

    def _check_waiting_for_replies(self) -> None:
        snapshot = self.orch.snapshot()
        waiting = [r for r, m in snapshot.models.items() if (m.note or "").startswith("waiting")]
        assert len(waiting) == 1
        assert snapshot.models[waiting[0]].state is S.COMPILING
        for _thread, repo in self.replies.values():
            assert self.engine.is_loaded(repo), f"{repo} is not loaded under its reply"
        assert self.engine.resident() <= self.capacity

    def _check_decision(self, decision: dict[str, object]) -> None:
        held = {r for _t, r in self.replies.values()}
        evicted = set(decision["evict"])  # type: ignore[call-overload]
        assert not evicted & held, f"the load of {decision['repo_id']} evicted a reply's model"

    def _check_rollback(self) -> None:
        if self.load_outcome not in (S.FAILED, S.CANCELED):
            return
        snapshot = self.orch.snapshot()
        for repo in self.load_evicted_all:  # evicted by the failed load: loaded back?
            users = [c for c, s in snapshot.conversations.items() if s.active_model == repo]
            state = snapshot.models[repo].state
            assert not users or state in IN_FLIGHT or state is S.READY, (
                f"{repo}, evicted by a failed load, was not loaded back for {users}"
            )

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def no_violation_inside_callbacks(self) -> None:
        assert not self.violations, self.violations[0]

    @invariant()
    def no_event_lost(self) -> None:
        assert self.orch.snapshot().seq == self.last_seq

    @invariant()
    def queue_is_fifo_of_requests(self) -> None:
        assert self.orch.snapshot().queue == tuple(self.expected_queue)

    @invariant()
    def intent_matches_the_reference(self) -> None:
        snapshot = self.orch.snapshot()
        for cid in CONVERSATIONS:
            status = snapshot.conversations[cid]
            assert (status.active_model, status.requested_model) == (
                self.active[cid],
                self.wanted[cid],
            ), cid
        assert dict(snapshot.active) == self.on_screen

    @invariant()
    def ready_exactly_when_loaded_and_within_the_budget(self) -> None:
        snapshot = self.orch.snapshot()
        ready = {r for r, m in snapshot.models.items() if m.state is S.READY}
        assert ready == set(self.engine.loaded)
        assert self.engine.peak_bytes <= self.capacity, "two models above the budget at once"
        assert self.max_models is None or len(self.engine.loaded) <= self.max_models
        for cid in CONVERSATIONS:
            repo = snapshot.conversations[cid].active_model
            if repo is not None:  # Ready, or asleep (loads again on the next reply)
                assert snapshot.models[repo].state is not S.NOT_DOWNLOADED

    @invariant()
    def replies_keep_their_model_loaded(self) -> None:
        for _thread, repo in self.replies.values():
            assert self.engine.is_loaded(repo), f"{repo} was unloaded under its reply"

    @invariant()
    def on_screen_conversations_were_told_their_model(self) -> None:
        for cid in self.on_screen.values():
            assert self.announced[cid] == self.active[cid]

    @invariant()
    def notes_only_while_waiting(self) -> None:
        for repo, status in self.orch.snapshot().models.items():
            assert status.note is None, f"{repo} kept the note {status.note!r} after the step"

    @invariant()
    def drained_queue_leaves_nothing_in_flight(self) -> None:
        snapshot = self.orch.snapshot()
        assert snapshot.working is None
        if not snapshot.queue:
            assert all(m.state not in IN_FLIGHT for m in snapshot.models.values())


OrchestratorMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOrchestratorInterleavings = OrchestratorMachine.TestCase
