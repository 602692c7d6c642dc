"""Issue 10 in real JupyterLab: versions, edit, export, and restore after a kernel restart.

Regenerate twice gives a "3 / 3" pager on the reply, whose ◀ ▶ buttons page through the
three versions; Edit on the user message (Enter saves) starts a new branch with its own
reply; Markdown and JSON exports arrive as browser downloads with the conversation in them;
and after the kernel restarts and the cell runs again, the widget shows the same
conversation, title and messages, and chat goes on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser_jupyter import JupyterServer
from browser_notebook import NotebookPage, OpenWidget
from playwright.sync_api import Locator, expect

TINY = "demo/tiny-chat"
READY_MS = 90_000
STEP_MS = 60_000


def done_replies(nb: NotebookPage) -> Locator:
    return nb.widget.locator('article.cw-msg-assistant[data-status="done"]')


def pager_label(message: Locator) -> Locator:
    return message.get_by_role("group", name="Versions").locator(".cw-pager-label")


def restart_kernel(server: JupyterServer, notebook: str) -> None:
    """Restart the notebook's kernel through Jupyter's REST API (as Kernel > Restart does)."""
    sessions = server.api("GET", "/api/sessions")
    kernel = next(s["kernel"]["id"] for s in sessions if s["path"].endswith(notebook))
    server.api("POST", f"/api/kernels/{kernel}/restart", timeout=60)


@pytest.mark.browser
def test_versions_edit_export_and_restore_after_a_kernel_restart(
    open_widget: OpenWidget, jupyter: JupyterServer, tmp_path: Path
) -> None:
    nb = open_widget(models=[TINY])
    page = nb.page
    nb.probe("chat.set_settings(max_new_tokens=6) or chat.workspace", timeout=60)
    nb.select_model(TINY)
    nb.probe(f"chat.model_state({TINY!r})", until=lambda v: v == "Ready", timeout=120)
    expect(nb.send_button).to_be_enabled(timeout=READY_MS)

    nb.send_message("Tell me about the sea")
    expect(done_replies(nb)).to_have_count(1, timeout=STEP_MS)
    regenerate = nb.widget.get_by_role("button", name="Regenerate", exact=True)
    contents = [nb.assistant_messages.last.locator(".cw-msg-body").inner_text()]
    for expected in ("2 / 2", "3 / 3"):
        expect(regenerate).to_be_visible(timeout=STEP_MS)
        regenerate.click()
        expect(pager_label(nb.assistant_messages.last)).to_have_text(expected, timeout=STEP_MS)
        expect(done_replies(nb)).to_have_count(1, timeout=STEP_MS)
        contents.append(nb.assistant_messages.last.locator(".cw-msg-body").inner_text())

    reply = nb.assistant_messages.last
    reply.get_by_role("button", name="Previous version").click()
    expect(pager_label(nb.assistant_messages.last)).to_have_text("2 / 3", timeout=STEP_MS)
    expect(nb.assistant_messages.last.locator(".cw-msg-body")).to_have_text(contents[1])
    nb.assistant_messages.last.get_by_role("button", name="Previous version").click()
    expect(pager_label(nb.assistant_messages.last)).to_have_text("1 / 3", timeout=STEP_MS)
    expect(nb.assistant_messages.last.locator(".cw-msg-body")).to_have_text(contents[0])
    expect(
        nb.assistant_messages.last.get_by_role("button", name="Previous version")
    ).to_be_disabled()
    nb.assistant_messages.last.get_by_role("button", name="Next version").click()
    expect(pager_label(nb.assistant_messages.last)).to_have_text("2 / 3", timeout=STEP_MS)
    kernel_versions = nb.probe(
        "chat.versions(chat.messages[1]['id']).label", until=lambda v: v == "2 / 3"
    )
    assert kernel_versions == "2 / 3"

    # Edit the user message: Escape cancels, Enter saves and regenerates on a new branch.
    question = nb.user_messages.first
    question.get_by_role("button", name="Edit", exact=True).click()
    editor = question.get_by_role("textbox", name="Edit message")
    expect(editor).to_be_focused()
    editor.press("Escape")
    expect(editor).to_have_count(0)
    nb.user_messages.first.get_by_role("button", name="Edit", exact=True).click()
    editor = nb.user_messages.first.get_by_role("textbox", name="Edit message")
    editor.fill("Tell me about the mountains")
    editor.press("Enter")
    expect(nb.user_messages.first.locator(".cw-msg-body")).to_have_text(
        "Tell me about the mountains", timeout=STEP_MS
    )
    expect(pager_label(nb.user_messages.first)).to_have_text("2 / 2", timeout=STEP_MS)
    expect(done_replies(nb)).to_have_count(1, timeout=STEP_MS)
    expect(nb.assistant_messages.last.get_by_role("group", name="Versions")).to_be_hidden()
    # The old branch is one click away.
    nb.user_messages.first.get_by_role("button", name="Previous version").click()
    expect(nb.user_messages.first.locator(".cw-msg-body")).to_have_text(
        "Tell me about the sea", timeout=STEP_MS
    )
    expect(pager_label(nb.assistant_messages.last)).to_have_text("2 / 3")
    nb.user_messages.first.get_by_role("button", name="Next version").click()
    expect(nb.user_messages.first.locator(".cw-msg-body")).to_have_text(
        "Tell me about the mountains", timeout=STEP_MS
    )
    final_reply = nb.assistant_messages.last.locator(".cw-msg-body").inner_text()

    # Export: real browser downloads.
    with page.expect_download(timeout=STEP_MS) as markdown_download:
        nb.widget.get_by_role("button", name="Export as Markdown").click()
    md = markdown_download.value
    assert md.suggested_filename == "Chat-1.md"
    md_text = Path(md.path()).read_text("utf-8")
    assert md_text.startswith("# Chat 1")
    assert "Tell me about the mountains" in md_text
    assert "Tell me about the sea" not in md_text  # the active branch only
    with page.expect_download(timeout=STEP_MS) as json_download:
        nb.widget.get_by_role("button", name="Export as JSON").click()
    js = json_download.value
    assert js.suggested_filename == "Chat-1.json"
    data = json.loads(Path(js.path()).read_text("utf-8"))
    assert [m["content"] for m in data["messages"] if m["role"] == "user"] == [
        "Tell me about the mountains"
    ]
    tree = data["chatwidget"]["messages"]
    assert sum(m["role"] == "assistant" for m in tree) == 4  # every version is kept
    assert {m["content"] for m in tree if m["role"] == "user"} == {
        "Tell me about the sea",
        "Tell me about the mountains",
    }

    # Restart the kernel and run the cell again: the same conversation comes back.
    nb.probe("chat.history.flush(10)", until=lambda v: v is True)
    restart_kernel(jupyter, nb.name)
    nb.wait_for_kernel()
    nb.run_all()
    nb.probe("len(chat.messages)", until=lambda v: v == 2, timeout=120)
    nb.wait_for_widget()
    expect(nb.widget).to_have_count(1, timeout=STEP_MS)
    expect(nb.user_messages).to_have_count(1, timeout=STEP_MS)
    expect(nb.user_messages.first.locator(".cw-msg-body")).to_have_text(
        "Tell me about the mountains", timeout=STEP_MS
    )
    expect(nb.assistant_messages.last.locator(".cw-msg-body")).to_have_text(final_reply)
    expect(pager_label(nb.user_messages.first)).to_have_text("2 / 2")
    expect(nb.widget.locator(".cw-chat-title")).to_have_text("Chat 1")
    # Its model is asked for again, and the chat goes on in the new kernel.
    nb.probe(f"chat.model_state({TINY!r})", until=lambda v: v == "Ready", timeout=120)
    expect(nb.send_button).to_be_enabled(timeout=READY_MS)
    nb.send_message("And the rivers?")
    expect(done_replies(nb)).to_have_count(2, timeout=STEP_MS)
    assert re.search(
        r"\bAnd the rivers\?", nb.user_messages.last.locator(".cw-msg-body").inner_text()
    )
