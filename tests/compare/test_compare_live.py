"""Compare mode on the real stack: local hub, real downloader, engine and queue."""

from __future__ import annotations

from collections.abc import Callable

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
        return row.get("state") == "Downloading"

    wait_for(chat, downloading, 60, "the second column to show Downloading")
    local_hub.rate = None
    results = handle.wait(240)
    assert [r.model for r in results] == [TINY, small_repo]
    for r in results:
        assert r.status == "done", r
        assert r.text
        assert r.new_tokens and r.new_tokens > 0
        assert r.tokens_per_s and r.tokens_per_s > 0
        assert r.time_to_first_token_s is not None
    assert chat.active_model == TINY
    assert chat.requested_model == TINY
    assert handle._run.active_models_changed == {}
    assert "Downloading" in states or "Queued" in states
    assert handle.schedule is not None and handle.schedule.mode == "sequential"
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
    assert wait_for(chat, lambda: (chat.compare_state or {}).get("done"), 10, "done")
    cols = chat.compare_state["columns"]
    assert [c["text"] for c in cols] == [r.text for r in results]
