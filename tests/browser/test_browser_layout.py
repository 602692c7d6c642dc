"""Issue 13: usable at a 400 px wide output area (a VS Code side panel, a split JupyterLab)
and at 1,600 px, in real JupyterLab.

The page is resized until the notebook's output area is the width under test. At 400 px the
panels stack (conversations, chat, downloads, one below the other) and nothing sticks out of
the widget; at 1,600 px they stand side by side. At each width a user picks a model, chats,
and opens the cancel confirmation, which must fit. Screenshots of both go to
``test-artifacts/screenshots``.
"""

from __future__ import annotations

from typing import Any

import pytest
from browser_notebook import NotebookPage, OpenWidget, Screenshot
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
SMALL = "demo/small-chat"
READY_MS = 90_000
STEP_MS = 30_000

_GEOMETRY_JS = """(root) => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width }; };
  const visible = (el) =>
    el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const selector = 'button, select, input, textarea, [role="progressbar"]';
  const controls = [...root.querySelectorAll(selector)]
    .filter(visible)
    .map((el) => ({ name: el.getAttribute('aria-label') || el.textContent.trim().slice(0, 30)
                          || el.tagName, ...box(el) }));
  return {
    root: box(root), scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
    sidebar: box(root.querySelector('.cw-sidebar')),
    chat: box(root.querySelector('.cw-chat')),
    downloads: box(root.querySelector('.cw-downloads')),
    controls,
  };
}"""


def set_output_width(nb: NotebookPage, width: int, height: int = 1000) -> int:
    """Resize the page until the widget's output area is ``width`` px wide; return it."""
    output = nb.widget.first
    viewport = {"width": (nb.page.viewport_size or {"width": 1400})["width"], "height": height}
    current = 0
    for _ in range(6):
        current = round(output.evaluate("(el) => el.getBoundingClientRect().width"))
        if abs(current - width) <= 1:
            return current
        viewport["width"] = max(320, viewport["width"] + width - current)
        nb.page.set_viewport_size({"width": viewport["width"], "height": viewport["height"]})
    raise AssertionError(f"could not make the output area {width} px wide (it is {current} px)")


def geometry(nb: NotebookPage) -> dict[str, Any]:
    return dict(nb.widget.locator(".cw-root").evaluate(_GEOMETRY_JS))


def assert_nothing_sticks_out(g: dict[str, Any]) -> None:
    root = g["root"]
    assert g["scrollWidth"] <= g["clientWidth"], f"the widget scrolls sideways: {g}"
    outside = [
        c for c in g["controls"] if c["left"] < root["left"] - 1 or c["right"] > root["right"] + 1
    ]
    assert not outside, f"controls cut off at the widget's edge {root}: {outside}"


def chat_and_open_the_confirmation(nb: NotebookPage, hub: LocalHub) -> None:
    """Pick a model, get a reply, and open the cancel dialog on a second download."""
    nb.select_model(TINY)
    expect(nb.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    nb.send_message("Hello there")
    expect(nb.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)
    hub.rate = 300_000  # demo/small-chat takes long enough to look at it
    nb.select_model(SMALL)
    nb.wait_for_progress_above(SMALL, 0, STEP_MS)
    nb.download_row(SMALL).get_by_role("button", name="Cancel", exact=True).click()
    expect(nb.widget.get_by_role("alertdialog")).to_be_visible()


def assert_dialog_fits(nb: NotebookPage) -> None:
    root = nb.widget.locator(".cw-root").bounding_box()
    dialog = nb.widget.get_by_role("alertdialog").bounding_box()
    assert root is not None
    assert dialog is not None
    assert root["x"] <= dialog["x"], (root, dialog)
    assert dialog["x"] + dialog["width"] <= root["x"] + root["width"], (root, dialog)


@pytest.mark.browser
def test_at_400px_the_panels_stack_and_nothing_is_cut_off(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget()
    assert set_output_width(nb, 400, height=2000) == 400  # tall: the stacked widget fits
    chat_and_open_the_confirmation(nb, hub)
    g = geometry(nb)
    assert g["root"]["width"] <= 400, g["root"]
    side, chat, downloads = g["sidebar"], g["chat"], g["downloads"]
    assert side["bottom"] <= chat["top"], f"chat is not below the sidebar: {side} {chat}"
    assert chat["bottom"] <= downloads["top"], f"downloads not below the chat: {chat} {downloads}"
    for panel in (side, chat, downloads):
        assert panel["width"] >= g["root"]["width"] - 40, f"a panel does not span it: {panel}"
    assert_nothing_sticks_out(g)
    assert_dialog_fits(nb)
    screenshot(nb, "narrow-400-dialog")
    nb.widget.get_by_role("alertdialog").get_by_role("button", name="Keep downloading").click()
    screenshot(nb, "narrow-400")


@pytest.mark.browser
def test_at_1600px_the_panels_stand_side_by_side(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget()
    assert set_output_width(nb, 1600) == 1600
    chat_and_open_the_confirmation(nb, hub)
    g = geometry(nb)
    side, chat, downloads = g["sidebar"], g["chat"], g["downloads"]
    assert side["right"] <= chat["left"], (side, chat)
    assert chat["right"] <= downloads["left"], (chat, downloads)
    assert abs(side["top"] - chat["top"]) <= 1, (side, chat)
    assert abs(chat["top"] - downloads["top"]) <= 1, (chat, downloads)
    assert chat["width"] >= 800, f"the chat does not use the width: {chat}"
    assert_nothing_sticks_out(g)
    assert_dialog_fits(nb)
    nb.widget.get_by_role("alertdialog").get_by_role("button", name="Keep downloading").click()
    screenshot(nb, "wide-1600")
