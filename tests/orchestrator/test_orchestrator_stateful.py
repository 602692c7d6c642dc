"""Hypothesis interleaves requests, cancels, retries, switches, completions and failures.

After every step it checks the issue's invariants against a small reference model of
intent kept by the test. Examples per run: ``CHATWIDGET_HYPOTHESIS_EXAMPLES`` (default
200); set it to a few thousand for a deep run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from orch_fakes import FakeDownloader, FakeEngine

from chatwidget.errors import ModelLoadError, NetworkError
from chatwidget.orchestrator import (
    ErrorReported,
    Event,
    Evicted,
    ModelState,
    Orchestrator,
    ProgressChanged,
    StateChanged,
    Switched,
)
from chatwidget.orchestrator.lifecycle import IN_FLIGHT, WORKING

S = ModelState
MODELS = ("org/m0", "org/m1", "org/m2", "org/m3")
SIZES = {"org/m0": 1, "org/m1": 1, "org/m2": 2, "org/m3": 1}
CAPACITY = 3
GROUPS = {"c0": "g0", "c1": "g0", "c2": "g1"}
CONVERSATIONS = tuple(GROUPS)
EXAMPLES = int(os.environ.get("CHATWIDGET_HYPOTHESIS_EXAMPLES", "200"))

models = st.sampled_from(MODELS)
conversations = st.sampled_from(CONVERSATIONS)
# Things a user does while the worker is busy downloading or loading.
user_actions = st.lists(
    st.one_of(
        st.tuples(st.just("request"), conversations, models),
        st.tuples(st.just("cancel"), models),
        st.tuples(st.just("switch"), conversations),
        st.tuples(st.just("retry"), models),
    ),
    max_size=2,
)


class OrchestratorMachine(RuleBasedStateMachine):
    """Drives a stepped orchestrator and mirrors the expected intent per conversation."""

    @initialize()
    def start(self) -> None:
        self.downloader = FakeDownloader(cached=["org/m0"])
        self.engine = FakeEngine(capacity=CAPACITY, sizes=SIZES)
        self.orch = Orchestrator(self.downloader, self.engine, start=False)
        self.last_seq = 0
        self.expected_queue: list[str] = []
        self.wanted: dict[str, str | None] = dict.fromkeys(CONVERSATIONS)
        self.active: dict[str, str | None] = dict.fromkeys(CONVERSATIONS)
        self.announced: dict[str, str | None] = dict.fromkeys(CONVERSATIONS)
        self.on_screen: dict[str, str] = {}
        # Assertions raised inside a subscriber or a fake's hook would be contained by the
        # orchestrator (that is its job), so they are recorded and re-raised by an invariant.
        self.violations: list[AssertionError] = []
        self.orch.subscribe(self._recorded(self.on_event))
        for cid, group in GROUPS.items():
            self.on_screen.setdefault(group, cid)
            self.orch.open_conversation(cid, group=group)

    def teardown(self) -> None:
        if hasattr(self, "orch"):
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
        else:
            assert isinstance(event, ErrorReported | ProgressChanged | Evicted)
            assert not (isinstance(event, ErrorReported) and event.source == "worker")

    def _on_state(self, event: StateChanged) -> None:
        repo = event.repo_id
        if event.new is S.QUEUED:
            self.expected_queue.append(repo)
        elif event.old is S.QUEUED:
            if event.new is S.CANCELED:
                self.expected_queue.remove(repo)
            else:
                assert self.expected_queue[0] == repo, "work did not start in request order"
                self.expected_queue.pop(0)
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
        elif event.old is S.READY and event.new is S.DOWNLOADED:
            for cid in CONVERSATIONS:
                if self.active[cid] == repo:
                    self.active[cid] = None
                    if self.wanted[cid] == repo:
                        self.wanted[cid] = None
                    self.announced[cid] = None

    def _fit_refused(self, repo: str) -> bool:
        """A stale model stops at Downloaded only if it would push out an active model."""
        keep = {a for a in self.active.values() if a is not None}
        kept = sum(SIZES[r] for r in keep)
        return kept + SIZES[repo] > CAPACITY

    # --- user actions ---------------------------------------------------------------------

    def do(self, action: tuple[str, ...]) -> None:
        kind, *args = action
        if kind == "request":
            self._request(args[0], args[1])
        elif kind == "cancel":
            self._cancel(args[0])
        elif kind == "retry":
            self._retry(args[0])
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
        if self.engine.is_loaded(repo):
            self.engine.evict(repo)

    @rule(while_downloading=user_actions, while_compiling=user_actions)
    def worker_completes_next_item(
        self, while_downloading: list[tuple[str, ...]], while_compiling: list[tuple[str, ...]]
    ) -> None:
        head = self.orch.snapshot().queue[:1]
        if head:
            repo = head[0]
            self.downloader.during[repo] = [
                self._recorded(self._check_one_working),
                *[self._bind(a) for a in while_downloading],
            ]
            self.engine.during[repo] = [
                self._recorded(self._check_one_working),
                self._recorded(self._check_load_keeps_active_models),
                *[self._bind(a) for a in while_compiling],
            ]
        worked = self.orch.step()
        assert worked == bool(head)
        self.downloader.during.clear()
        self.engine.during.clear()

    def _bind(self, action: tuple[str, ...]) -> Callable[[], None]:
        return lambda: self.do(action)

    def _check_one_working(self) -> None:
        snapshot = self.orch.snapshot()
        working = [r for r, m in snapshot.models.items() if m.state in WORKING]
        assert len(working) == 1, f"more than one item working: {working}"

    def _check_load_keeps_active_models(self) -> None:
        repo, keep = self.engine.loads[-1]
        wanting = {c for c in CONVERSATIONS if self.wanted[c] == repo and self.active[c] != repo}
        must_keep = {self.active[c] for c in CONVERSATIONS if c not in wanting} - {None}
        assert must_keep <= set(keep), f"load of {repo} may push out {must_keep - set(keep)}"
        if not wanting:
            assert not self._fit_refused(repo), f"stale {repo} loaded though it does not fit"

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
    def active_models_are_ready_and_loaded(self) -> None:
        snapshot = self.orch.snapshot()
        for cid in CONVERSATIONS:
            repo = snapshot.conversations[cid].active_model
            if repo is not None:
                assert snapshot.models[repo].state is S.READY
        ready = {r for r, m in snapshot.models.items() if m.state is S.READY}
        assert ready == set(self.engine.loaded)

    @invariant()
    def on_screen_conversations_were_told_their_model(self) -> None:
        for cid in self.on_screen.values():
            assert self.announced[cid] == self.active[cid]

    @invariant()
    def drained_queue_leaves_nothing_in_flight(self) -> None:
        snapshot = self.orch.snapshot()
        assert snapshot.working is None
        if not snapshot.queue:
            assert all(m.state not in IN_FLIGHT for m in snapshot.models.values())


OrchestratorMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOrchestratorInterleavings = OrchestratorMachine.TestCase
