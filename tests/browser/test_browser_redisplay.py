"""Issue 13: re-run and re-display in JupyterLab.

The same widget shown twice gives two working views that agree; running its display cell
again (anywidget #904: a blank widget after a re-run) shows a working view each time; and
nothing is handled twice: one Enter sends one message, one switch shows one toast per view
on screen. Running the cell that makes the widget again gives a fresh, working widget.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_jupyter import JupyterServer
from browser_notebook import NotebookPage, Screenshot, write_notebook
from playwright.sync_api import Locator, Page, expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
TINY_B = "demo/tiny-chat-b"
READY_MS = 90_000
STEP_MS = 30_000
MAKE, SHOW_AGAIN = 0, 1  # the cell that makes and shows the widget; the one that shows it again


def run_cell(nb: NotebookPage, index: int) -> None:
    """Run one cell again from its editor (Ctrl+Enter), as a user re-runs a cell."""
    nb.cells.nth(index).locator(".jp-InputArea-editor").click()
    nb.page.keyboard.press("Control+Enter")


def view(nb: NotebookPage, cell: int) -> Locator:
    """The widget view in the output of ``cell``."""
    return nb.output_of(cell).filter(has=nb.page.get_by_role("region", name="Downloads"))


def toasts_saying(nb: NotebookPage, text: str) -> int:
    return nb.toasts_seen().count(text)


@pytest.mark.browser
def test_shown_twice_and_rerun_every_view_works_and_nothing_is_handled_twice(
    browser_page: Page,
    notebook_server: JupyterServer,
    hub: LocalHub,
    tmp_path: Path,
    screenshot: Screenshot,
) -> None:
    cache = str(tmp_path / "hf-cache")
    make = (
        "from chatwidget import ChatWidget\n"
        f"chat = ChatWidget(models=[{TINY!r}, {TINY_B!r}], cache_dir={cache!r})\n"
        "chat"
    )
    write_notebook(notebook_server.root_dir / "redisplay.ipynb", [make, "chat", "# kernel probes"])
    nb = NotebookPage(browser_page, notebook_server, "redisplay.ipynb", "lab")
    nb.open()
    nb.run_all()
    nb.wait_for_widget()
    expect(nb.widget).to_have_count(2)
    first, second = view(nb, MAKE), view(nb, SHOW_AGAIN)

    # Both views work and agree: pick in the first, send from the second.
    first.get_by_role("combobox", name="Model").select_option(TINY)
    for v in (first, second):
        expect(v.get_by_role("group", name=TINY, exact=True)).to_contain_text(
            "Ready", timeout=READY_MS
        )
    nb.wait_for_toast(f"Switched to {TINY}", STEP_MS)
    box = second.get_by_role("textbox", name="Message", exact=True)
    box.fill("Hello from the second view")
    box.press("Enter")
    for v in (first, second):
        expect(v.locator("article.cw-msg-user")).to_have_count(1)
        expect(v.locator("article.cw-msg-assistant[data-status=done]")).to_have_count(
            1, timeout=STEP_MS
        )
    assert toasts_saying(nb, f"Switched to {TINY}") == 2  # one per view, not more

    # Showing it again, three times: a working view each time, never a blank one.
    for _ in range(3):
        run_cell(nb, SHOW_AGAIN)
        again = view(nb, SHOW_AGAIN)
        expect(again.get_by_role("combobox", name="Model")).to_have_value(TINY, timeout=STEP_MS)
        expect(again.locator("article.cw-msg-user")).to_have_count(1)
        expect(again.locator("article.cw-msg-assistant")).to_have_count(1)
    expect(nb.page.locator(".cw-root")).to_have_count(2)  # the old views are gone
    screenshot(nb, "shown-again")

    # Nothing is handled twice: one Enter is one message, one switch one toast per view.
    box = view(nb, SHOW_AGAIN).get_by_role("textbox", name="Message", exact=True)
    box.fill("One message")
    box.press("Enter")
    expect(first.locator("article.cw-msg-assistant[data-status=done]")).to_have_count(
        2, timeout=STEP_MS
    )
    roles = nb.probe("[m['role'] for m in chat.messages]", until=lambda v: len(v) >= 4)
    assert roles == ["user", "assistant", "user", "assistant"]
    view(nb, SHOW_AGAIN).get_by_role("combobox", name="Model").select_option(TINY_B)
    nb.wait_for_toast(f"Switched to {TINY_B}", READY_MS)
    expect(first.get_by_role("combobox", name="Model")).to_have_value(TINY_B)
    expect(nb.toasts).to_have_count(0, timeout=10_000)  # all shown toasts have faded
    assert toasts_saying(nb, f"Switched to {TINY_B}") == 2

    # Running the cell that makes the widget: a fresh widget there, and it works.
    run_cell(nb, MAKE)
    fresh = view(nb, MAKE)
    expect(fresh.locator("article.cw-msg-user")).to_have_count(0, timeout=STEP_MS)
    fresh_select = fresh.get_by_role("combobox", name="Model")
    fresh_select.select_option(TINY)  # loaded already (the kernel shares it): switches at once
    expect(fresh_select.locator(f'option[value="{TINY}"]')).to_contain_text(
        "Active", timeout=STEP_MS
    )
    box = fresh.get_by_role("textbox", name="Message", exact=True)
    box.fill("Hello, new widget")
    box.press("Enter")
    expect(fresh.locator("article.cw-msg-assistant[data-status=done]")).to_have_count(
        1, timeout=STEP_MS
    )
    # The second cell still shows the widget it was given, untouched by the new one.
    expect(view(nb, SHOW_AGAIN).locator("article.cw-msg-user")).to_have_count(2)
    contents = nb.probe("[m['content'] for m in chat.messages]", until=lambda v: len(v) == 2)
    assert contents[0] == "Hello, new widget"
    screenshot(nb, "made-again")
