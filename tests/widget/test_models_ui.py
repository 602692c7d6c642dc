"""The widget's model management on the real stack: memory policy, unload, placement,
tokens for gated repos, fit labels per precision before download, consistent reads.

Local hub, real downloader, engine and queue; the front end is the comm boundary
(tests/widget/frontend.py). The browser tests cover the real front end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from chatwidget.errors import InvalidSettingError
from chatwidget.orchestrator import Event, MemoryPolicy
from chatwidget.runtime import Consumer
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_GATED_REPO, DEMO_GATED_TOKEN
from chatwidget.widget import ChatWidget
from tests.widget.frontend import FrontEnd, wait_for

TINY, TINY_B = "demo/tiny-chat", "demo/tiny-chat-b"
VERDICT_LABELS = {"Fits on GPU", "Partial offload", "CPU only", "Won't fit"}


def _row(rows: list[dict[str, Any]], repo_id: str) -> dict[str, Any]:
    return next(r for r in rows if r["repo_id"] == repo_id)


def _models(chat: ChatWidget) -> list[dict[str, Any]]:
    """The model rows now: reading the state brings the rows to the same snapshot."""
    chat.model_state(TINY)
    return list(chat.models)


def test_memory_keywords_set_the_runtime_policy(make_chat: Callable[..., ChatWidget]) -> None:
    chat = make_chat(memory_budget="2GB", max_loaded_models=1, keep_alive="10m")
    assert chat._runtime.policy == MemoryPolicy(2_000_000_000, 1, 600.0)
    assert chat._runtime.engine.memory_budget_bytes == 2_000_000_000
    assert chat._runtime.orchestrator.keep_alive_s == 600.0
    assert isinstance(chat._consumer, Consumer)  # weakly owned by the widget
    assert chat._consumer.group == chat._group
    with pytest.raises(InvalidSettingError, match="memory_budget"):
        make_chat(memory_budget="lots")
    with pytest.raises(TypeError, match="did you mean 'keep_alive'"):
        make_chat(keep_alive_s=5)


def test_unload_frees_the_memory_the_rows_say_so_and_the_next_reply_loads_again(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    loaded = _row(chat.downloads, TINY)["residency"]
    assert loaded["placement"] == ["CPU"]
    assert loaded["can_unload"] is True
    assert loaded["memory_bytes"]
    assert loaded["memory_bytes"] > 0
    assert _row(chat.models, TINY)["residency"] == loaded
    engine = chat._runtime.engine
    assert engine.used_bytes() == loaded["memory_bytes"]

    reply = front.request("unload_model", repo_id=TINY)
    assert reply["ok"], reply
    assert chat.model_state(TINY) == "Downloaded"
    assert engine.used_bytes() == 0
    assert chat.wait_until_idle(30)
    for rows in (chat.downloads, chat.models):
        after = _row(rows, TINY)
        assert after["state"] == "Downloaded"
        assert after["residency"]["freed_bytes"] == loaded["memory_bytes"]
        assert after["residency"]["can_unload"] is False
        assert after["residency"]["placement"] == []
    assert chat.active_model == TINY  # asleep: the conversation keeps it

    mark = front.mark()
    text = chat.send("Hello again").wait(120)
    assert text
    assert chat.wait_until_idle(30)
    assert chat.model_state(TINY) == "Ready"
    notes = [
        m.get("note")
        for _, data, _ in front.since(mark)
        for m in (data.get("state", {}).get("transcript") or {}).get("messages", [])
    ]
    assert "Loading model…" in notes  # shown while the asleep model loaded again
    assert _row(chat.downloads, TINY)["residency"]["freed_bytes"] is None

    result = chat.unload(TINY)  # the Python API says what it freed too
    assert result.unloaded
    assert result.freed_bytes == loaded["memory_bytes"]
    assert chat.unload(TINY).unloaded is False  # not loaded: nothing to do


def test_free_memory_unloads_idle_models(make_chat: Callable[..., ChatWidget]) -> None:
    chat = make_chat()
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    size = _row(chat.downloads, TINY)["residency"]["memory_bytes"]
    assert chat.free_memory() == size
    assert chat.model_state(TINY) == "Downloaded"


def test_gated_row_offers_add_a_token_and_the_token_never_shows(
    make_chat: Callable[..., ChatWidget],
    local_hub: LocalHub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    chat = make_chat(models=[TINY])
    front = FrontEnd(chat)
    events: list[Event] = []
    chat.subscribe(events.append)

    reply = front.request("add_model", repo_id=DEMO_GATED_REPO)
    assert reply["ok"], reply
    wait_for(chat, lambda: chat.model_state(DEMO_GATED_REPO) == "Failed", 60, "gated failure")
    row = _row(chat.downloads, DEMO_GATED_REPO)
    assert row["error"]
    assert row["action"] == "Add a token"
    assert row["can_retry"] is False
    assert "ChatWidget(token=" in row["error"] or "token" in row["error"]

    def refused() -> bool:
        fit = _row(_models(chat), DEMO_GATED_REPO)["fit"]
        return fit is not None and fit["status"] == "unavailable"

    wait_for(chat, refused, 60, "the gated model's estimate, refused")
    assert "token" in _row(_models(chat), DEMO_GATED_REPO)["fit"]["note"]

    bad = front.request("set_token", token="   ")
    assert not bad["ok"]
    assert "empty" in bad["error"]
    reply = front.request("set_token", token=DEMO_GATED_TOKEN)
    assert reply["ok"], reply
    wait_for(chat, lambda: chat.model_state(DEMO_GATED_REPO) == "Ready", 120, "gated ready")
    assert chat.active_model == DEMO_GATED_REPO
    assert any(r.token_present for r in local_hub.requests)

    def estimated() -> bool:
        fit = _row(_models(chat), DEMO_GATED_REPO)["fit"]
        return fit is not None and fit["status"] == "ready"

    wait_for(chat, estimated, 60, "the gated model's estimate, with the token")

    # The token is in no trait, comm message, event, log, repr or error text.
    assert chat.wait_until_idle(30)
    assert DEMO_GATED_TOKEN not in repr(chat.get_state())
    for name in chat.trait_names():
        assert DEMO_GATED_TOKEN not in repr(getattr(chat, name)), name
    for data in front.messages():
        assert DEMO_GATED_TOKEN not in repr(data)
    assert all(DEMO_GATED_TOKEN not in repr(e) for e in events)
    assert DEMO_GATED_TOKEN not in caplog.text
    for thing in (chat, chat._consumer, chat._runtime.downloader, chat._runtime.orchestrator):
        assert DEMO_GATED_TOKEN not in repr(thing)
    assert all(DEMO_GATED_TOKEN not in n.message for n in chat.session.errors)


def test_python_set_token_queues_the_gated_model_again(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat(models=[TINY, DEMO_GATED_REPO])
    chat.select_model(DEMO_GATED_REPO)
    wait_for(chat, lambda: chat.model_state(DEMO_GATED_REPO) == "Failed", 60, "gated failure")
    assert chat.set_token(DEMO_GATED_TOKEN) == (DEMO_GATED_REPO,)
    assert chat.wait_until_idle(120)
    assert chat.model_state(DEMO_GATED_REPO) == "Ready"


def test_downloads_model_state_and_active_model_read_one_snapshot(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat(models=[TINY, DEMO_GATED_REPO])
    chat.select_model(DEMO_GATED_REPO)
    deadline = time.monotonic() + 60
    while True:
        # The trait first, then the Python read: the publisher may move the trait on
        # between two reads, but a Python read is never behind what the trait showed.
        rows = [r for r in chat.downloads if r["repo_id"] == DEMO_GATED_REPO]  # not yet, at first
        shown = rows[0]["state"] if rows else None
        state = chat.model_state(DEMO_GATED_REPO)
        if shown == "Failed":
            assert state == "Failed"
        if state == "Failed":
            break
        assert time.monotonic() < deadline
    # The read that saw Failed brought the rows to the same snapshot: the error is there.
    row = _row(chat.downloads, DEMO_GATED_REPO)
    assert row["state"] == "Failed"
    assert row["error"]
    assert _row(chat.models, DEMO_GATED_REPO)["state"] == "Failed"
    assert chat.active_model is None
    assert chat.conversations[0]["requested_model"] == DEMO_GATED_REPO


def test_add_model_from_the_front_end_answers_without_waiting_for_the_hub(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    local_hub.inject("*", delay=5.0, times=None)  # every hub request is slow
    started = time.monotonic()
    reply = front.request("add_model", repo_id="demo/no-such-model")
    assert reply["ok"], reply
    assert time.monotonic() - started < 1.5  # the hub's answer is the worker's to wait for
    # The row reaches the selector with the publisher's next round, long before the hub
    # could have answered (the trait is the publisher thread's to write, not the caller's).
    wait_for(
        chat,
        lambda: any(m["repo_id"] == "demo/no-such-model" for m in chat.models),
        3.0,
        "the added model's row",
    )
    assert time.monotonic() - started < 5.0
    local_hub.reset()
    wait_for(chat, lambda: chat.model_state("demo/no-such-model") == "Failed", 60, "not found")
    row = _row(chat.downloads, "demo/no-such-model")
    assert row["can_retry"] is False
    assert row["action"] == "Check the model id"


def test_python_add_model_can_check_the_hub_on_a_worker_thread(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    spec = chat.add_model("demo/missing-model", wait=False)
    assert spec.repo_id == "demo/missing-model"
    wait_for(chat, lambda: not chat.session.knows("demo/missing-model"), 60, "check")
    assert any("demo/missing-model" in n.message for n in chat.session.errors)


def test_fit_labels_per_precision_before_download_and_the_choice_is_remembered(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    assert front.request("estimate_fit")["ok"]

    def ready() -> bool:
        fit = _row(chat.models, TINY)["fit"]
        return fit is not None and fit["status"] == "ready"

    wait_for(chat, ready, 60, "fit estimate")
    fit = _row(chat.models, TINY)["fit"]
    options = {o["option"]: o for o in fit["options"]}
    assert set(options) == {"auto", "bfloat16", "float16", "float32"}
    for o in options.values():
        assert o["label"] in VERDICT_LABELS
        assert o["required_bytes"] > 0
    assert options["float32"]["required_bytes"] >= options["bfloat16"]["required_bytes"]
    absent = {a["option"]: a["reason"] for a in fit["absent"]}
    assert set(absent) == {"8bit", "4bit"}  # no bitsandbytes + CUDA on this machine
    assert all(absent.values())
    # Before download: only header reads (Range) of the weights, nothing in the cache.
    assert chat.model_state(TINY) == "Not downloaded"
    assert not [
        r
        for r in local_hub.requests
        if r.method == "GET" and r.range is None and r.path.endswith(".safetensors")
    ]
    # The table itself, from Python.
    table = chat.fit(TINY)
    assert table is not None
    assert table.row("float32").label in VERDICT_LABELS

    assert _row(_models(chat), TINY)["precision"] == "auto"
    assert front.request("set_precision", repo_id=TINY, option="float32")["ok"]
    assert _row(_models(chat), TINY)["precision"] == "float32"
    spec = next(s for s in chat.session.catalog if s.repo_id == TINY)
    assert (spec.dtype, spec.quantization) == ("float32", None)
    refused = front.request("set_precision", repo_id=TINY, option="4bit")
    assert not refused["ok"]
    assert "bitsandbytes" in refused["error"]
    assert _row(_models(chat), TINY)["precision"] == "float32"  # nothing changed

    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    import torch

    loaded = chat._runtime.engine._pool.get(TINY)
    assert loaded is not None
    assert next(loaded.model.parameters()).dtype == torch.float32

    # Changing the precision of a loaded model unloads it; it loads again in the new one.
    chat.set_precision(TINY, "bfloat16")
    assert chat.model_state(TINY) == "Downloaded"
    assert _row(_models(chat), TINY)["precision"] == "bfloat16"
    assert chat.send("Hi").wait(120)
    loaded = chat._runtime.engine._pool.get(TINY)
    assert loaded is not None
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_precision_changed_while_downloading_is_the_one_loaded(
    make_chat: Callable[..., ChatWidget], local_hub: LocalHub
) -> None:
    import torch

    chat = make_chat()
    local_hub.rate = 20_000  # slow enough to change the precision mid-download
    chat.select_model(TINY_B)
    wait_for(chat, lambda: chat.model_state(TINY_B) == "Downloading", 60, "download")
    chat.set_precision(TINY_B, "float32")
    local_hub.rate = None
    assert chat.wait_until_idle(120)
    assert chat.model_state(TINY_B) == "Ready"
    loaded = chat._runtime.engine._pool.get(TINY_B)
    assert loaded is not None
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_a_model_too_large_offers_free_memory_not_retry_and_free_memory_tries_again(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    size = _row(chat.downloads, TINY)["residency"]["memory_bytes"]
    chat._runtime.configure(memory_budget=size // 2)  # too small for either model
    chat.select_model(TINY_B)
    assert chat.wait_until_idle(120)
    row = _row(chat.downloads, TINY_B)
    assert row["state"] == "Failed"
    assert row["action"] == "Free memory"
    assert row["can_retry"] is False
    assert "chat.unload(" in row["error"]

    chat._runtime.configure(memory_budget=None)  # room again (the default budget)
    reply = front.request("free_memory", repo_id=TINY_B)
    assert reply["ok"], reply
    assert chat.wait_until_idle(120)
    assert chat.model_state(TINY_B) == "Ready"
    assert chat.active_model == TINY_B
