"""Issue 13: the quickstart, driven with the keyboard alone, in JupyterLab.

The shipped ``notebooks/quickstart.ipynb`` (offline: the test hub and tiny models) is opened
and its first cells run with Shift+Enter; Shift+Tab from the next cell enters the widget.
From there, only keys: pick a model (type-ahead in the Model list), change a setting, send,
regenerate, pick a second model, cancel its download and confirm, retry it, pick it again,
stop a reply, start a new conversation and switch back. Every element focus lands on shows
a visible ring. Nothing is clicked and no element is focused by script.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from browser_jupyter import JupyterServer
from browser_keyboard import assert_focus_ring, is_focused, press_until_focused
from browser_notebook import NotebookPage, Screenshot
from playwright.sync_api import Page, expect

from chatwidget.testing.hub import LocalHub

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
TINY = "demo/tiny-chat"
SMALL = "demo/small-chat"
READY_MS = 90_000
STEP_MS = 30_000
#: The quickstart's cells up to and including the one that shows the widget (``chat``):
#: title, set-up code, "Show the widget", ``chat``.
CELLS_TO_THE_WIDGET = 4


@pytest.mark.browser
def test_quickstart_with_the_keyboard_alone(
    browser_page: Page, notebook_server: JupyterServer, hub: LocalHub, screenshot: Screenshot
) -> None:
    shutil.copyfile(QUICKSTART, notebook_server.root_dir / "keyboard-quickstart.ipynb")
    nb = NotebookPage(browser_page, notebook_server, "keyboard-quickstart.ipynb", "lab")
    nb.open()
    page = nb.page
    keys = page.keyboard
    for _ in range(CELLS_TO_THE_WIDGET):
        keys.press("Shift+Enter")
    nb.wait_for_widget()
    w = nb.widget

    # Into the widget from the cell after it, and pick a model by typing its first letter.
    press_until_focused(page, nb.model_select, "Shift+Tab")
    keys.press("t")  # "Tiny chat (offline demo) ..."
    expect(nb.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    nb.wait_for_toast(f"Switched to {TINY}", STEP_MS)
    expect(nb.downloads).to_be_focused()  # a requested download takes focus to the manager
    assert_focus_ring(nb.downloads)

    # Settings: open them and raise Max new tokens, so a reply streams long enough to stop.
    press_until_focused(page, w.locator("summary", has_text="Settings"), "Shift+Tab")
    keys.press("Enter")
    max_tokens = w.get_by_label("Max new tokens")
    press_until_focused(page, max_tokens, "Tab")
    keys.press("ControlOrMeta+a")
    keys.type("2000")
    keys.press("Tab")
    expect(max_tokens).to_have_value("2000")

    # Send, then regenerate.
    press_until_focused(page, nb.message_box, "Tab")
    keys.type("Hello! What can you do?")
    keys.press("Enter")
    reply = nb.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)
    first_id = reply.get_attribute("data-id")
    regenerate = w.get_by_role("button", name="Regenerate", exact=True)
    press_until_focused(page, regenerate, "Tab")
    keys.press("Enter")
    expect(nb.assistant_messages).to_have_count(1)
    expect(nb.assistant_messages.last).not_to_have_attribute("data-id", first_id or "")
    expect(nb.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)
    expect(nb.message_box).to_be_focused()  # Regenerate went away, then Stop: focus is kept

    # A second model, then cancel its download (confirmed) and retry it.
    hub.rate = 1_000_000  # demo/small-chat takes about half a minute
    press_until_focused(page, nb.model_select, "Shift+Tab")
    keys.press("s")  # "Small chat (offline demo) ..."
    expect(nb.download_row(SMALL)).to_contain_text("Downloading", timeout=STEP_MS)
    expect(nb.downloads).to_be_focused()
    cancel = nb.download_row(SMALL).get_by_role("button", name="Cancel", exact=True)
    press_until_focused(page, cancel, "Tab")
    keys.press("Enter")
    dialog = w.get_by_role("alertdialog")
    keep = dialog.get_by_role("button", name="Keep downloading")
    confirm = dialog.get_by_role("button", name="Cancel download")
    expect(keep).to_be_focused()
    assert_focus_ring(keep)
    screenshot(nb, "confirm-cancel")
    press_until_focused(page, confirm, "Tab")
    keys.press("Enter")
    expect(nb.download_row(SMALL)).to_contain_text("Canceled", timeout=STEP_MS)
    retry = nb.download_row(SMALL).get_by_role("button", name="Retry", exact=True)
    expect(retry).to_be_focused()  # focus stays on the row: Cancel went, Retry came
    assert_focus_ring(retry)
    hub.rate = None
    keys.press("Enter")
    expect(nb.download_row(SMALL)).to_contain_text("Ready", timeout=READY_MS)
    # Canceling withdrew it as the chat's target: pick it again, now Ready, to switch.
    press_until_focused(page, nb.model_select, "Shift+Tab")
    keys.press("s")
    expect(nb.model_select.locator(f'option[value="{SMALL}"]')).to_contain_text("Active")

    # Stop a reply: demo/small-chat writes 2,000 tokens (about 15 s here).
    press_until_focused(page, nb.message_box, "Shift+Tab")
    keys.type("Tell me a long story")
    keys.press("Enter")
    reply = nb.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "streaming", timeout=STEP_MS)
    stop = w.get_by_role("button", name="Stop", exact=True)
    press_until_focused(page, stop, "Tab")
    keys.press("Enter")
    expect(reply).to_have_attribute("data-status", "stopped", timeout=STEP_MS)
    expect(reply.locator(".cw-meta-model")).to_have_attribute("title", SMALL)
    expect(nb.message_box).to_be_focused()
    screenshot(nb, "stopped")

    # A new conversation, then back to the first one.
    new = w.get_by_role("button", name="New conversation")
    press_until_focused(page, new, "Shift+Tab")
    keys.press("Enter")
    conversations = w.get_by_role("list", name="Conversations").get_by_role("listitem")
    expect(conversations).to_have_count(2)
    expect(nb.user_messages).to_have_count(0)
    first_chat = conversations.first.get_by_role("button", name=re.compile(r"^Chat 1"))
    press_until_focused(page, first_chat, "Tab")
    keys.press("Enter")
    expect(first_chat).to_have_attribute("aria-current", "true")
    expect(nb.user_messages).to_have_count(2)
    expect(nb.assistant_messages).to_have_count(2)
    assert is_focused(first_chat)
