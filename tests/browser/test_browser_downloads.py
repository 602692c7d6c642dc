"""Issue 6, in real JupyterLab: the chat keeps working while the download manager works."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_notebook import NotebookPage
from conftest import OpenWidget
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
TINY_B = "demo/tiny-chat-b"
SMALL = "demo/small-chat"
#: Download plus first load (the kernel imports transformers then) on a busy machine.
READY_MS = 90_000
STEP_MS = 30_000

Screenshot = Callable[[NotebookPage, str], Path]


def start_on_tiny(nb: NotebookPage) -> None:
    """Pick the tiny model in the selector and wait until it is Ready and active."""
    nb.select_model(TINY)
    expect(nb.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    expect(nb.model_select.locator(f'option[value="{TINY}"]')).to_contain_text("Active")


@pytest.mark.browser
def test_chat_on_a_streams_while_b_downloads_then_switches_to_b(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget()
    start_on_tiny(nb)

    hub.rate = 1_500_000  # demo/small-chat now takes about 18 s: time to chat meanwhile
    nb.select_model(SMALL)
    toggle = nb.downloads.get_by_role("button", name=re.compile("Downloads"))
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(nb.downloads).to_be_focused()
    expect(nb.download_row(SMALL)).to_contain_text("Downloading", timeout=STEP_MS)
    expect(nb.widget.get_by_text(re.compile(r"Waiting for .*small"))).to_be_visible()
    first = nb.wait_for_progress_above(SMALL, 0, STEP_MS)
    later = nb.wait_for_progress_above(SMALL, first, STEP_MS)
    assert 0 < first < later < 100

    nb.send_message("Tell me about the weather")
    reply = nb.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)
    expect(reply.locator(".cw-meta-model")).to_have_attribute("title", TINY)
    expect(nb.download_row(SMALL)).to_contain_text("Downloading")  # B is still on its way
    reply_id = reply.get_attribute("data-id")
    streamed = [r for r in nb.reply_history() if r["id"] == reply_id]
    growing = {r["length"] for r in streamed if r["status"] == "streaming" and r["length"]}
    assert len(growing) >= 2, f"the reply did not stream in pieces: {streamed}"
    screenshot(nb, "chat-while-downloading")

    hub.rate = None  # let B finish now
    expect(nb.download_row(SMALL)).to_contain_text("Ready", timeout=READY_MS)
    nb.wait_for_toast(f"Switched to {SMALL}", STEP_MS)
    assert nb.selector_highlights() >= 1
    expect(nb.model_select.locator(f'option[value="{SMALL}"]')).to_contain_text("Active")
    expect(nb.model_select).to_have_value(SMALL)
    screenshot(nb, "switched")
    # The history is kept across the switch, and Python sees what the UI shows.
    expect(nb.user_messages).to_have_count(1)
    expect(nb.assistant_messages).to_have_count(1)
    kernel = nb.probe(
        f"[chat.active_model, chat.model_state({SMALL!r}), [m['model'] for m in chat.messages]]",
        until=lambda v: v[0] == SMALL,
    )
    assert kernel == [SMALL, "Ready", [None, TINY]]
