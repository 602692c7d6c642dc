"""Compare mode on the real stack: local hub, real downloader, engine and queue."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chatwidget.compare import PROBES, comparison_json, comparison_markdown
from chatwidget.compare.probe import measure
from chatwidget.engine.types import GenerationSettings
from chatwidget.history import History
from chatwidget.testing.hub import LocalHub
from chatwidget.widget import ChatWidget
from tests.widget.frontend import FrontEnd, wait_for

TINY, TINY_B = "demo/tiny-chat", "demo/tiny-chat-b"


def test_compare_two_models_one_downloading_leaves_the_active_model_alone(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub, small_repo: str
) -> None:
    chat = make_chat(models=[TINY, small_repo])
    front = FrontEnd(chat)
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    assert chat.active_model == TINY
    local_hub.rate = 4_000_000  # ~28 MB: a few seconds of Downloading
    handle = chat.compare("Say hello", models=[TINY, small_repo])
    states: list[str] = []

    def downloading() -> bool:
        row = (chat.compare_state or {}).get("columns", [{}, {}])[1]
        if row.get("state") and (not states or states[-1] != row["state"]):
            states.append(row["state"])
        return bool(row.get("state") == "Downloading")

    wait_for(chat, downloading, 60, "the second column to show Downloading")
    # the download manager shows it too (queued by the comparison, not selected)
    wait_for(
        chat,
        lambda: [row["repo_id"] for row in chat.downloads] == [TINY, small_repo],
        10,
        "the download manager's rows",
    )
    local_hub.rate = None
    results = handle.wait(240)
    assert [r.model for r in results] == [TINY, small_repo]
    for r in results:
        assert r.status == "done", r
        assert r.text
        assert r.new_tokens
        assert r.new_tokens > 0
        assert r.tokens_per_s
        assert r.tokens_per_s > 0
        assert r.time_to_first_token_s is not None
    assert chat.active_model == TINY
    assert chat.requested_model == TINY
    assert handle._run.active_models_changed == {}
    assert "Downloading" in states or "Queued" in states
    assert handle.schedule is not None
    assert handle.schedule.mode == "sequential"
    table = handle.to_markdown()
    assert "| Model A | demo/tiny-chat |" in table
    # streamed as compare deltas, then the trait has the final text
    deltas = [
        m["content"]
        for m in front.messages()
        if m.get("method") == "custom" and m["content"].get("kind") == "compare_delta"
    ]
    # the small model's reply takes longer than one 50 ms round: it streamed
    assert any(d["column"] == 1 for d in deltas)
    wait_for(chat, lambda: bool((chat.compare_state or {}).get("done")), 10, "done")
    cols = chat.compare_state["columns"]
    assert [c["text"] for c in cols] == [r.text for r in results]


def test_blind_mode_hides_names_until_the_vote_and_the_vote_is_stored_in_sqlite(
    make_chat: Callable[..., ChatWidget], tmp_path: Path
) -> None:
    path = tmp_path / "history.sqlite3"
    chat = make_chat(history=path)
    history = chat.session.history  # compare mode saves in the widget's own history
    handle = chat.compare("Tell me a fact", models=[TINY, TINY_B], blind=True)
    results = handle.wait(240)
    assert [r.label for r in results] == ["Model A", "Model B"]
    assert all(r.model is None for r in results)
    state = chat.compare_state
    wait_for(chat, lambda: bool((chat.compare_state or {}).get("saved")), 10, "saved")
    state = chat.compare_state
    assert state is not None
    assert state["blind"]
    assert all(c["model"] is None for c in state["columns"])
    assert TINY not in handle.to_markdown()
    assert TINY_B not in handle.to_markdown()
    assert handle.comparison_id is not None
    with pytest.raises(ValueError, match="Model A"):
        handle.vote(TINY)  # names are hidden: vote by column
    winner = handle.vote("Model B")
    assert winner.model in (TINY, TINY_B)
    revealed = handle.results
    assert {r.model for r in revealed} == {TINY, TINY_B}
    wait_for(chat, lambda: (chat.compare_state or {}).get("vote") == 1, 10, "vote shown")
    assert {c["model"] for c in chat.compare_state["columns"]} == {TINY, TINY_B}
    assert history.flush(10)
    history.close()
    # A new History on the file reads the comparison and its vote back.
    reopened = History.open(path)
    try:
        (saved,) = reopened.comparisons()
        assert saved.id == handle.comparison_id
        assert saved.blind
        assert saved.vote == winner.model
        assert saved.prompt == "Tell me a fact"
        assert [r.model for r in saved.results] == [r.model for r in revealed]
        assert [r.text for r in saved.results] == [r.text for r in revealed]
        assert all(r.usage is not None and r.usage.new_tokens for r in saved.results)
        markdown = comparison_markdown(saved)
        assert "✓ better" in markdown
        assert winner.model in markdown
        data = json.loads(comparison_json(saved))
        assert data["vote"] == winner.model
        assert data["blind"] is True
    finally:
        reopened.close()


def test_export_and_front_end_intents(make_chat: Callable[..., ChatWidget]) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    bad = front.request("compare", prompt="Hi", models=[TINY], blind=False)
    assert not bad["ok"]
    assert "2 or 3 models" in bad["error"]
    none = front.request("compare_export", format="markdown")
    assert not none["ok"]
    assert "no comparison yet" in none["error"]
    ok = front.request("compare", prompt="Hi there", models=[TINY, TINY_B], blind=False)
    assert ok["ok"], ok
    handle = chat._compare().comparer.handle()
    assert handle is not None
    results = handle.wait(240)
    assert chat.active_model is None  # nothing was selected for the conversation
    md = front.request("compare_export", format="markdown")
    assert md["ok"]
    assert md["export"] == handle.to_markdown()
    assert "| Column | Model | Time to first token | Tokens/s | Tokens | Status |" in md["export"]
    js = front.request("compare_export", format="json")
    data = json.loads(js["export"])
    assert [r["model"] for r in data["results"]] == [TINY, TINY_B]
    assert [r["text"] for r in data["results"]] == [r.text for r in results]
    assert all(r["time_to_first_token_s"] is not None for r in data["results"])
    synced = front.request("compare_sync")  # answered from this (the kernel's) thread
    assert synced["ok"]
    assert synced["compare"]["done"]
    assert [c["text"] for c in synced["compare"]["columns"]] == [r.text for r in results]
    vote = front.request("compare_vote", column=0)
    assert vote["ok"]
    assert vote["compare"]["vote"] == 0
    (saved,) = chat.comparisons()  # no History: kept in memory
    assert saved.vote == TINY
    assert not saved.blind


def test_models_that_do_not_fit_together_run_one_after_another(
    make_chat: Callable[..., ChatWidget], small_repo: str
) -> None:
    chat = make_chat(models=[TINY, small_repo])
    runtime = chat._runtime
    first = chat.compare("Warm up", models=[TINY, small_repo])  # downloads both
    first.wait(240)
    specs = [runtime.orchestrator.spec(m) for m in (TINY, small_repo)]
    need = [runtime.engine.estimate_memory(spec) for spec in specs]
    runtime.configure(memory_budget=max(need) + (min(need) // 2))
    try:
        handle = chat.compare("Hello again", models=[small_repo, TINY])
        results = handle.wait(240)
    finally:
        runtime.configure(memory_budget=None)
    schedule = handle.schedule
    assert schedule is not None
    assert schedule.mode == "sequential"
    assert not schedule.fits_together
    assert "memory budget" in schedule.reason
    assert "one after another" in schedule.reason
    assert [r.status for r in results] == ["done", "done"]
    assert chat.compare_state is not None
    wait_for(chat, lambda: (chat.compare_state or {}).get("reason") == schedule.reason, 10, "")
    assert chat.active_model is None


def test_a_measured_probe_at_or_above_the_floor_runs_the_models_together(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    chat.compare("Warm up", models=[TINY, TINY_B]).wait(240)
    PROBES.record({TINY: 0.95, TINY_B: 0.93})
    try:
        handle = chat.compare("Together now", models=[TINY, TINY_B])
        results = handle.wait(240)
    finally:
        PROBES.forget([TINY, TINY_B])
    assert handle.schedule is not None
    assert handle.schedule.mode == "concurrent"
    assert "0.93x" in handle.schedule.reason
    assert [r.status for r in results] == ["done", "done"]


def test_streaming_costs_a_delta_per_round_and_the_trait_changes_at_most_ten_times_a_second(
    make_chat: Callable[..., ChatWidget], small_repo: str
) -> None:
    chat = make_chat(models=[TINY, small_repo])
    chat.compare("Warm up", models=[TINY, small_repo]).wait(240)  # download and load
    chat.set_settings(max_new_tokens=300)
    front = FrontEnd(chat)
    handle = chat.compare("Tell me a long story", models=[small_repo, TINY])
    results = handle.wait(240)
    wait_for(chat, lambda: bool((chat.compare_state or {}).get("saved")), 10, "saved")
    updates = front.state_updates("compare_state")
    deltas = [
        m["content"]
        for m in front.messages()
        if m.get("method") == "custom" and m["content"].get("kind") == "compare_delta"
    ]
    tokens = sum(r.new_tokens or 0 for r in results)
    assert tokens > 100
    assert len(deltas) >= 3, "the small model's reply should stream in several chunks"
    # Per token nothing but the delta stream: far fewer trait writes than tokens, at most
    # about ten a second, and every delta carries only its own chunk.
    span = max(updates[-1] - updates[0], 0.1)
    assert len(updates) <= 10 * span + 3
    assert len(updates) < tokens / 5
    streamed = {0: "", 1: ""}
    for d in deltas:
        streamed[d["column"]] += d["text"]
    for column, text in streamed.items():
        assert results[column].text.startswith(text)
    # The trait never carries the seq of the chat's publisher: it has its own thread.
    assert all(
        "seq" not in m["state"]
        for m in front.messages()
        if m.get("method") == "update" and "compare_state" in m.get("state", {})
    )


def test_the_probe_measures_both_models_and_records_for_the_schedule(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    ratios = measure(
        chat._runtime,
        [TINY, TINY_B],
        settings=GenerationSettings(max_new_tokens=16),
        rounds=1,
    )
    try:
        assert set(ratios) == {TINY, TINY_B}
        assert all(r > 0 for r in ratios.values())
        assert PROBES.lookup([TINY_B, TINY]) == ratios
    finally:
        PROBES.forget([TINY, TINY_B])
    assert chat.active_model is None


def test_stop_keeps_what_was_written_and_does_not_wait_for_the_rest(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub, small_repo: str
) -> None:
    chat = make_chat(models=[TINY, small_repo])
    local_hub.rate = 1_000_000  # the second model takes about 30 s to download
    try:
        handle = chat.compare("Say hello", models=[TINY, small_repo])
        wait_for(
            chat,
            lambda: chat.model_state(small_repo) == "Downloading" and bool(handle.results[0].text),
            120,
            "the first reply while the second model downloads",
        )
        handle.stop()
        results = handle.wait(30)
    finally:
        local_hub.rate = None
    assert results[0].status in ("done", "stopped")
    assert results[0].text
    assert results[1].status == "stopped"
    assert results[1].text == ""
    (saved,) = chat.comparisons()
    assert [r.status for r in saved.results] == [results[0].status, "stopped"]


def test_closing_the_widget_mid_comparison_stops_its_threads_promptly(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub, small_repo: str
) -> None:
    chat = make_chat(models=[TINY, small_repo])
    local_hub.rate = 1_000_000
    try:
        handle = chat.compare("Say hello", models=[small_repo, TINY])
        wait_for(chat, lambda: chat.model_state(small_repo) == "Downloading", 60, "download")
        started = time.monotonic()
        chat.close()
        took = time.monotonic() - started
    finally:
        local_hub.rate = None
    assert took < 5.0
    assert handle.done
    names = {t.name for t in threading.enumerate()}
    assert "chatwidget-compare" not in names
    assert "chatwidget-compare-publisher" not in names
    with pytest.raises(RuntimeError, match="closed"):
        chat.compare("Again", models=[small_repo, TINY])


def test_a_model_the_hub_does_not_have_fails_its_column_and_the_other_answers(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    handle = chat.compare("Hello", models=[TINY, "demo/no-such-model"])
    first, second = handle.wait(240)
    assert first.status == "done"
    assert first.text
    assert second.status == "failed"
    assert second.error
    assert "no-such-model" in second.error
    assert chat.active_model is None
