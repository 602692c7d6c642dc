"""Issue 6 in Notebook 7, dark theme: text from the user and the model never becomes markup."""

from __future__ import annotations

import pytest
from browser_notebook import OpenWidget, Screenshot, luminance
from playwright.sync_api import expect

from chatwidget.testing.parrot import XSS_TEXT

READY_MS = 90_000
STEP_MS = 30_000
USER_TEXT = "Look: <img src=x onerror=alert(1)> and <script>alert(3)</script> **bold**"


@pytest.mark.browser
def test_markup_renders_as_text_in_notebook7_with_the_dark_theme(
    open_widget: OpenWidget, parrot_repo: str, screenshot: Screenshot, dark_theme: str
) -> None:
    nb = open_widget(models=[parrot_repo], app="notebook7")
    nb.probe("chat.set_settings(max_new_tokens=3)")  # three parroted payloads are plenty
    nb.select_model(parrot_repo)
    expect(nb.download_row(parrot_repo)).to_contain_text("Ready", timeout=READY_MS)

    nb.send_message(USER_TEXT)
    expect(nb.user_messages).to_have_count(1)
    expect(nb.user_messages.first.locator(".cw-msg-body")).to_have_text(USER_TEXT)
    reply = nb.assistant_messages.first
    expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)
    expect(reply.locator(".cw-msg-body")).to_have_text(XSS_TEXT * 3)
    messages = nb.widget.get_by_label("Messages", exact=True)
    expect(messages.locator("img, script")).to_have_count(0)
    screenshot(nb, "markup-as-text")
    # The widget follows the theme: a dark background with light text, well apart.
    colors = nb.colors()
    background, text = luminance(colors["background"]), luminance(colors["text"])
    assert len(colors["background"]) == 3 or colors["background"][3] == 1, colors  # opaque
    assert background < 0.1, f"not a dark background: {colors}"
    assert text > 0.5, f"not light text: {colors}"
    contents = nb.probe("[m['content'] for m in chat.messages]", until=lambda v: len(v) == 2)
    assert contents == [USER_TEXT, XSS_TEXT * 3]

    # Shift+Enter starts a new line in the message box, here too (Notebook 7 dispatches
    # shortcuts in the capture phase, unlike JupyterLab); Enter sends.
    nb.message_box.fill("first line")
    nb.message_box.press("Shift+Enter")
    nb.message_box.press_sequentially("second line")
    expect(nb.message_box).to_have_value("first line\nsecond line")
    nb.message_box.press("Enter")
    expect(nb.user_messages.last.locator(".cw-msg-body")).to_have_text("first line\nsecond line")
    # No alert() ran: the page fixture fails the test on any native dialog or console error.
