"""Issue 6, in real JupyterLab: the chat keeps working while the download manager works."""

from __future__ import annotations

import re

import pytest
from browser_notebook import NotebookPage, OpenWidget, Screenshot
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
TINY_B = "demo/tiny-chat-b"
SMALL = "demo/small-chat"
#: Download plus first load (the kernel imports transformers then) on a busy machine.
READY_MS = 90_000
STEP_MS = 30_000


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
    nb.probe("chat.set_settings(max_new_tokens=400)")  # a reply long enough to stream visibly
    start_on_tiny(nb)

    hub.rate = 1_500_000  # demo/small-chat now takes about 18 s: time to chat meanwhile
    nb.select_model(SMALL)
    toggle = nb.downloads.get_by_role("button", name=re.compile("Downloads"))
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(nb.downloads).to_be_focused()
    expect(nb.download_row(SMALL)).to_contain_text("Downloading", timeout=STEP_MS)
    expect(nb.pending_label).to_have_text(re.compile(r"Waiting for .*small-chat"))
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
    expect(nb.toasts).to_have_count(0, timeout=10_000)  # A's toast has faded: a clean picture
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


@pytest.mark.browser
def test_switching_away_while_x_downloads_keeps_target_y_and_gives_no_toast_for_x(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget()
    hub.rate = 2_000_000  # X (demo/small-chat) takes about 14 s
    nb.select_model(SMALL)
    nb.wait_for_progress_above(SMALL, 0, STEP_MS)

    nb.select_model(TINY_B)  # Y: queued behind X
    expect(nb.model_select).to_have_value(TINY_B)
    expect(nb.download_row(TINY_B)).to_contain_text("Queued")
    expect(nb.pending_label).to_have_text(re.compile(r"Waiting for .*tiny-chat-b"))
    screenshot(nb, "x-downloading-y-queued")

    hub.rate = None  # Y was picked while X downloaded: X may finish now
    expect(nb.download_row(SMALL)).to_contain_text("Ready", timeout=READY_MS)
    kernel = nb.probe(
        f"[chat.requested_model, chat.model_state({SMALL!r})]",
        until=lambda v: v[1] == "Ready",
    )
    assert kernel == [TINY_B, "Ready"]

    expect(nb.download_row(TINY_B)).to_contain_text("Ready", timeout=READY_MS)
    nb.wait_for_toast(f"Switched to {TINY_B}", STEP_MS)
    assert f"Switched to {SMALL}" not in nb.toasts_seen()
    expect(nb.model_select).to_have_value(TINY_B)
    active = nb.probe("[chat.active_model, chat.requested_model]", until=lambda v: v[0] == TINY_B)
    assert active == [TINY_B, TINY_B]
    assert f"Switched to {SMALL}" not in nb.toasts_seen()
    screenshot(nb, "y-active")


@pytest.mark.browser
def test_failed_download_shows_its_error_survives_reload_and_retry_reaches_ready(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget()
    start_on_tiny(nb)
    nb.send_message("Hello there")
    expect(nb.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)
    reply_text = nb.assistant_messages.last.locator(".cw-msg-body").inner_text()

    weights = hub.inject(
        f"/{TINY_B}/resolve/*/model.safetensors", method="GET", status=500, times=None
    )
    nb.select_model(TINY_B)
    row = nb.download_row(TINY_B)
    expect(row).to_contain_text("Failed", timeout=READY_MS)
    assert weights.fired >= 1
    error = nb.probe(
        f"[d['error'] for d in chat.downloads if d['repo_id'] == {TINY_B!r}]",
        until=lambda v: bool(v and v[0]),
    )[0]
    expect(row).to_contain_text(error)
    expect(row.get_by_role("button", name="Retry", exact=True)).to_be_visible()
    expect(row.get_by_role("button", name="Cancel", exact=True)).to_be_hidden()
    screenshot(nb, "failed")

    # The state lives in the kernel: a reload shows the same queue, error and chat.
    nb.reload()
    nb.wait_for_widget()
    expect(nb.download_row(TINY_B)).to_contain_text("Failed")
    expect(nb.download_row(TINY_B)).to_contain_text(error)
    expect(nb.download_row(TINY)).to_contain_text("Ready")
    expect(nb.user_messages).to_have_count(1)
    expect(nb.user_messages.first).to_contain_text("Hello there")
    expect(nb.assistant_messages).to_have_count(1)
    expect(nb.assistant_messages.first.locator(".cw-msg-body")).to_have_text(reply_text)
    expect(nb.model_select).to_have_value(TINY_B)
    screenshot(nb, "after-reload")

    hub.clear_faults()
    nb.download_row(TINY_B).get_by_role("button", name="Retry", exact=True).click()
    expect(nb.download_row(TINY_B)).to_contain_text("Ready", timeout=READY_MS)
    nb.wait_for_toast(f"Switched to {TINY_B}", STEP_MS)
    state = nb.probe(
        f"[chat.model_state({TINY_B!r}), chat.active_model]", until=lambda v: v[1] == TINY_B
    )
    assert state == ["Ready", TINY_B]


@pytest.mark.browser
def test_cancel_asks_for_confirmation_on_queued_and_downloading_rows(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget()
    hub.rate = 500_000  # demo/small-chat would take about a minute: it is canceled first
    nb.select_model(SMALL)
    first = nb.wait_for_progress_above(SMALL, 0, STEP_MS)
    nb.select_model(TINY_B)
    expect(nb.download_row(TINY_B)).to_contain_text("Queued")
    dialog = nb.widget.get_by_role("alertdialog")

    # Queued row: "Keep downloading" keeps it; confirming cancels it.
    queued = nb.download_row(TINY_B)
    queued.get_by_role("button", name="Cancel", exact=True).click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(TINY_B)
    screenshot(nb, "confirm-cancel-queued")
    dialog.get_by_role("button", name="Keep downloading").click()
    expect(dialog).to_be_hidden()
    expect(queued).to_contain_text("Queued")
    queued.get_by_role("button", name="Cancel", exact=True).click()
    dialog.get_by_role("button", name="Cancel download").click()
    expect(queued).to_contain_text("Canceled", timeout=STEP_MS)
    expect(queued.get_by_role("button", name="Retry", exact=True)).to_be_visible()

    # Downloading row, from the keyboard: Enter opens the dialog on the safe choice, Tab stays
    # inside it, Escape keeps the download and gives focus back to Cancel.
    downloading = nb.download_row(SMALL)
    cancel = downloading.get_by_role("button", name="Cancel", exact=True)
    keep = dialog.get_by_role("button", name="Keep downloading")
    confirm = dialog.get_by_role("button", name="Cancel download")
    cancel.focus()
    nb.page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(keep).to_be_focused()
    nb.page.keyboard.press("Tab")
    expect(confirm).to_be_focused()
    nb.page.keyboard.press("Tab")
    expect(keep).to_be_focused()
    nb.page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(cancel).to_be_focused()
    expect(downloading).to_contain_text("Downloading")
    # With the mouse: "Keep downloading" keeps it going; confirming cancels it.
    cancel.click()
    keep.click()
    expect(dialog).to_be_hidden()
    expect(downloading).to_contain_text("Downloading")
    nb.wait_for_progress_above(SMALL, first, STEP_MS)  # still moving
    cancel.click()
    confirm.click()
    expect(downloading).to_contain_text("Canceled", timeout=STEP_MS)
    screenshot(nb, "canceled")
    states = nb.probe(
        f"[chat.model_state({SMALL!r}), chat.model_state({TINY_B!r})]",
        until=lambda v: v == ["Canceled", "Canceled"],
    )
    assert states == ["Canceled", "Canceled"]
