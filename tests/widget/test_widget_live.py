"""ChatWidget headless, on the real stack: local hub, real downloader, engine and queue.

The front end is replaced by the comm boundary only (tests/widget/frontend.py). The browser
tests cover the real front end.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatwidget.testing.hub import LocalHub
from chatwidget.widget import ChatWidget
from tests.widget.frontend import FrontEnd, wait_for

TINY, TINY_B = "demo/tiny-chat", "demo/tiny-chat-b"


def test_select_downloads_loads_and_chats_on_the_model(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    assert chat.model_state(TINY) == "Not downloaded"
    focus = chat.download_focus_seq
    assert chat.select_model(TINY) == "Queued"
    assert chat.requested_model == TINY
    assert chat.wait_until_idle(120)
    assert chat.download_focus_seq == focus + 1
    assert chat.model_state(TINY) == "Ready"
    assert chat.active_model == TINY
    reply = chat.send("Hello there")
    text = reply.wait(120)
    assert text
    assert chat.wait_until_idle(30)
    last = chat.messages[-1]
    assert last["role"] == "assistant"
    assert last["content"] == text
    assert last["model"] == TINY
    assert last["status"] == "done"
    assert last["new_tokens"] is not None
    assert last["new_tokens"] > 0
    (row,) = chat.downloads
    assert row["repo_id"] == TINY
    assert row["state"] == "Ready"
    assert row["bytes_done"] == row["bytes_total"] > 0
    # The reply reached the front end: as deltas while streaming, then as synced state.
    assert front.state_updates("transcript")
    assert "".join(d["text"] for d in front.deltas()) in text


def test_chat_keeps_answering_on_current_model_while_another_downloads(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub, small_repo: str
) -> None:
    chat = make_chat(models=[TINY, small_repo])
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    local_hub.rate = 4_000_000  # ~28 MB: about 7 s
    chat.select_model(small_repo)
    wait_for(chat, lambda: chat.model_state(small_repo) == "Downloading", 30, "download")
    reply = chat.send("Are you still there?")
    assert reply.wait(120)
    assert chat.messages[-1]["model"] == TINY
    # The reply finished while the other model was still on its way.
    assert chat.model_state(small_repo) in {"Downloading", "Compiling"}
    assert chat.active_model == TINY
    local_hub.rate = None
    assert chat.wait_until_idle(120)
    assert chat.active_model == small_repo
    assert chat.last_switch is not None
    assert chat.last_switch["repo_id"] == small_repo


def test_stale_completion_marks_ready_without_switching(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub, small_repo: str
) -> None:
    chat = make_chat(models=[TINY, TINY_B, small_repo])
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    switches = chat.last_switch
    local_hub.rate = 4_000_000
    chat.select_model(small_repo)
    wait_for(chat, lambda: chat.model_state(small_repo) == "Downloading", 30, "download")
    chat.select_model(TINY)  # change of mind: back to the Ready model, at once
    assert chat.requested_model == TINY
    local_hub.rate = None
    assert chat.wait_until_idle(120)
    assert chat.model_state(small_repo) == "Ready"
    assert chat.active_model == TINY
    assert chat.last_switch == switches  # no toast for the stale completion


def test_progress_reaches_the_front_end_coalesced(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub, small_repo: str
) -> None:
    chat = make_chat(models=[small_repo])
    front = FrontEnd(chat)
    local_hub.rate = 6_000_000
    chat.select_model(small_repo)
    assert chat.wait_until_idle(120)
    updates = front.state_updates("downloads")
    assert len(updates) >= 5, "progress should be visible during a multi-second download"
    span = updates[-1] - updates[0]
    # At most about ten trait updates a second (plus the first and the final one).
    assert len(updates) <= 10 * span + 3


def test_front_end_intents_are_answered_and_errors_change_nothing(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    before = chat.conversations
    for bad in (
        "not an object",
        {"kind": "send", "text": "hi"},  # no id
        {"id": "x1", "kind": "launch_rockets"},
        {"id": "x2", "kind": "select_model"},  # missing field
        {"id": "x3", "kind": "select_model", "repo_id": 42},
        {"id": "x4", "kind": "select_model", "repo_id": "no spaces/allowed here"},
        {"id": "x5", "kind": "set_settings", "settings": {"temperature": "hot"}},
        {"id": "x6", "kind": "send", "text": "hello"},  # no model yet
    ):
        reply = front.intent(bad)
        assert reply["ok"] is False
        assert reply["error"]
        assert reply["kind"].endswith("-response")
    assert chat.wait_until_idle(10)
    assert chat.conversations == before
    assert chat.downloads == []
    ok = front.request("new_conversation")
    assert ok["ok"] is True
    assert ok["id"] == "r1"
    assert ok["kind"] == "new_conversation-response"
    assert chat.wait_until_idle(10)
    assert len(chat.conversations) == 2


def test_send_without_model_says_what_it_waits_for(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub
) -> None:
    chat = make_chat()
    stall = local_hub.inject("*.safetensors", method="GET", stall_after=0, ranged=False)
    chat.select_model(TINY)
    assert stall.wait_triggered(30)
    with pytest.raises(RuntimeError, match=f"waiting for {TINY}"):
        chat.send("too early?")
    assert chat.messages == []
    stall.release()
    assert chat.wait_until_idle(120)
    assert chat.active_model == TINY


def test_conversations_keep_their_own_history_and_model(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    first = chat.conversation_id
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    chat.send("in the first chat").wait(120)
    second = chat.new_conversation()
    assert chat.active_model == TINY  # a new chat starts on the current model
    chat.select_model(TINY_B)
    assert chat.wait_until_idle(120)
    assert chat.active_model == TINY_B
    chat.send("in the second chat").wait(120)
    chat.switch_conversation(first)
    assert chat.active_model == TINY
    assert chat.messages[0]["content"] == "in the first chat"
    chat.rename_conversation(second, "Second")
    chat.delete_conversation(second)
    assert chat.wait_until_idle(30)
    assert [c["id"] for c in chat.conversations] == [first]


def test_stop_keeps_partial_reply(make_chat: Callable[..., ChatWidget]) -> None:
    chat = make_chat()
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    chat.set_settings(max_new_tokens=400)
    handle = chat.send("Write a long story")
    assert handle.wait_for_first_token(60)
    chat.stop()
    handle.wait(60)
    assert handle.result is not None
    assert handle.result.stopped
    assert handle.result.usage.new_tokens < 400
    assert chat.messages[-1]["status"] == "stopped"
    assert chat.messages[-1]["content"] == handle.result.text


def test_two_widgets_share_one_queue_and_download_once(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub
) -> None:
    a = make_chat()
    b = make_chat()
    a.select_model(TINY)
    b.select_model(TINY)
    assert a.wait_until_idle(120)
    assert b.wait_until_idle(120)
    assert a.active_model == b.active_model == TINY
    weight_gets = [  # whole-file GETs: the plan's header reads carry a Range
        r
        for r in local_hub.requests
        if r.method == "GET" and r.range is None and r.path.endswith(".safetensors")
    ]
    assert len(weight_gets) == 1


def test_token_never_enters_widget_state(make_chat: Callable[..., ChatWidget]) -> None:
    secret = "hf_secret_token_value_123"
    chat = make_chat(token=secret)
    front = FrontEnd(chat)
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    state = chat.get_state()
    assert secret not in repr(state)
    assert all(secret not in repr(d) for d in front.messages())
    assert secret not in repr(chat._runtime.downloader)


def test_fallback_summary_for_static_renderers(make_chat: Callable[..., ChatWidget]) -> None:
    chat = make_chat()
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    chat.send("<b>bold?</b>").wait(120)
    data, _ = chat._repr_mimebundle_()
    md = data["text/markdown"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert TINY in md
    assert "&lt;b&gt;bold?&lt;/b&gt;" in md
    assert "<b>" not in md
    page = data["text/html"]
    assert TINY in page
    assert "&lt;b&gt;bold?&lt;/b&gt;" in page
    assert "<b>" not in page


def test_failing_subscriber_is_shown_in_the_widget_and_the_queue_goes_on(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()

    def broken(_event: object) -> None:
        raise ValueError("subscriber exploded")

    chat.subscribe(broken)
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    assert chat.active_model == TINY
    shown = [e for e in chat.errors if "subscriber exploded" in e["message"]]
    assert len(shown) == 1  # raised on every event, shown once
