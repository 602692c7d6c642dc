"""Resilient sync on the real stack: sequence numbers, snapshots, history pages, and a host
that drops every message sent from a background thread (as Colab does)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from chatwidget.session import Message
from chatwidget.testing.comm_faults import drop_background_messages
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_SMALL_REPO, DEMO_TINY_REPO
from chatwidget.widget import ChatWidget
from chatwidget.widget.protocol import PAGE_SIZE
from tests.widget.frontend import FrontEnd, stream_text, wait_for

TINY = DEMO_TINY_REPO
#: Waited on between two snapshot requests (a poll with a deadline; nothing sets it).
POLL = threading.Event()


def sync_notices(front: FrontEnd) -> list[dict[str, Any]]:
    return [
        d["content"]
        for d in front.messages()
        if d.get("method") == "custom" and d["content"].get("kind") == "sync"
    ]


def ready(make_chat: Callable[..., ChatWidget], **kwargs: Any) -> tuple[ChatWidget, FrontEnd]:
    chat = make_chat(**kwargs)
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    return chat, FrontEnd(chat)


def seed(chat: ChatWidget, n: int) -> None:
    """Give the active conversation ``n`` finished messages (as an import would)."""
    session = chat.session
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        session.store.append(session.conversation_id, Message(f"s{i}", role, f"message {i}"))
    session._changed("transcript")
    assert chat.wait_until_idle(30)


def test_every_state_message_carries_the_next_seq(make_chat: Callable[..., ChatWidget]) -> None:
    chat, front = ready(make_chat)
    chat.set_settings(max_new_tokens=64)
    handle = chat.send("Hello")
    handle.wait(60)
    assert chat.wait_until_idle(30)
    seqs = []
    for data in front.messages():
        if data.get("method") == "update":
            seqs.append(data["state"]["seq"])
        elif data["content"].get("kind") == "delta":
            seqs.append(data["content"]["seq"])
    assert len(seqs) >= 2  # the turn's start and end at least (deltas depend on speed)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one counter, no gaps
    notices = sync_notices(front)
    assert notices, "a Python API call on the main thread says seq and busy"
    assert all(n["seq"] <= seqs[-1] for n in notices)


def test_a_snapshot_mid_reply_holds_the_text_so_far_and_deltas_go_on_from_it(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat, front = ready(make_chat)
    chat.set_settings(max_new_tokens=400)
    handle = chat.send("Write a long story")
    wait_for(chat, lambda: len(front.deltas()) >= 2, 60, "streamed deltas")
    mark = front.mark()
    snapshot = front.request("resync")
    assert snapshot["ok"] is True
    state = snapshot["state"]
    assert state["seq"] == snapshot["seq"]
    assert snapshot["busy"] is True
    row = state["transcript"]["messages"][-1]
    assert row["status"] == "streaming"
    assert row["chunks"] >= 2
    assert row["content"]
    text = handle.wait(120)
    assert chat.wait_until_idle(30)
    later = front.deltas(since=mark)
    # What a view that took the snapshot shows: a prefix of the reply, never a hole in it.
    shown = stream_text(row, later)
    assert text.startswith(shown)
    assert len(shown) > len(row["content"])
    final = front.messages()[-1]
    assert final["state"]["transcript"]["messages"][-1]["content"] == text


def test_the_transcript_trait_holds_the_last_page_and_history_serves_the_rest(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat, front = ready(make_chat)
    seed(chat, 25)
    window = chat.transcript
    assert (window["start"], window["total"]) == (20, 25)
    assert [m["id"] for m in window["messages"]] == [f"s{i}" for i in range(20, 25)]
    cid = chat.conversation_id
    page = front.request("history", conversation_id=cid, before=20, limit=15)["page"]
    assert (page["start"], page["total"], page["epoch"]) == (5, 25, 0)
    assert [m["id"] for m in page["messages"]] == [f"s{i}" for i in range(5, 20)]
    first = front.request("history", conversation_id=cid, before=5, limit=100)["page"]
    assert first["start"] == 0
    assert len(first["messages"]) == 5
    for bad in (
        {"conversation_id": cid, "before": 5, "limit": 0},
        {"conversation_id": cid, "before": -1, "limit": 5},
        {"conversation_id": "c-nope", "before": 5, "limit": 5},
    ):
        reply = front.request("history", **bad)
        assert reply["ok"] is False
        assert reply["error"]


def test_a_turn_sends_only_the_last_page(make_chat: Callable[..., ChatWidget]) -> None:
    chat, front = ready(make_chat)
    seed(chat, 1000)
    mark = front.mark()
    chat.send("and one more").wait(60)
    assert chat.wait_until_idle(30)
    pages = [
        d["state"]["transcript"]
        for _, d, _ in front.since(mark)
        if d.get("method") == "update" and "transcript" in d["state"]
    ]
    assert pages
    assert all(len(p["messages"]) <= PAGE_SIZE for p in pages)
    assert pages[-1]["total"] == 1002
    assert pages[-1]["start"] == 1000


def test_with_background_messages_dropped_snapshots_still_bring_progress_and_the_reply(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub, small_repo: str
) -> None:
    """Every message the publisher thread sends is lost; what the main thread answers (as
    the front end asks, on a reply's ``busy`` and then whenever it hears nothing) carries
    the download's progress and the reply's text."""
    chat, front = ready(make_chat, models=[TINY, small_repo])
    harness = drop_background_messages(chat)
    try:
        local_hub.rate = 6_000_000  # ~28 MB: about 5 s
        answer = front.request("select_model", repo_id=DEMO_SMALL_REPO)
        assert answer["ok"] is True
        assert answer["busy"] is True  # the front end starts asking for snapshots
        progress = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            snap = front.request("resync")
            rows = {r["repo_id"]: r for r in snap["state"]["downloads"]}
            row = rows.get(small_repo)
            if row is not None and row["state"] == "Downloading":
                progress.append(row["bytes_done"])
            if not snap["busy"]:
                break
            POLL.wait(0.05)
        assert len(set(progress)) >= 2, f"progress did not move in the snapshots: {progress}"
        assert progress == sorted(progress)
        assert rows[small_repo]["state"] == "Ready"

        chat.set_settings(max_new_tokens=400)
        answer = front.request("send", text="Tell me a story")
        assert answer["busy"] is True
        partial = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            snap = front.request("resync")
            last = snap["state"]["transcript"]["messages"][-1]
            if last["status"] == "streaming" and last["content"]:
                partial = last["content"]
            if not snap["busy"]:
                break
            POLL.wait(0.05)
        assert last["status"] == "done"
        assert partial, "a snapshot taken while streaming shows the text so far"
        assert last["content"].startswith(partial)
        assert harness.dropped > 0
        assert not front.deltas(), "every delta came from the publisher thread and was lost"
    finally:
        harness.restore()
        local_hub.rate = None


def test_python_api_calls_tell_the_front_end_that_work_started(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    chat.select_model(TINY)
    assert sync_notices(front)[0]["busy"] is True
    assert chat.wait_until_idle(120)
    chat.set_settings(max_new_tokens=8)
    assert sync_notices(front)[-1]["busy"] is False
