"""Scratch check by the frontend helper (not committed): keys typed in the widget do not edit
the notebook, and the confirm dialog works from the keyboard in real JupyterLab."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect


@pytest.mark.browser
def test_keys_in_widget_do_not_edit_notebook(open_widget) -> None:  # type: ignore[no-untyped-def]
    nb = open_widget()
    cells_before = nb.cells.count()
    # Command-mode letters on a focused widget button: A/B insert cells, D D deletes one.
    nb.widget.get_by_role("button", name="New conversation").focus()
    nb.page.keyboard.press("Escape")
    for key in ["a", "b", "d", "d", "m", "Enter"]:
        nb.page.keyboard.press(key)
    box = nb.message_box
    box.click()
    box.press_sequentially("abd dm")
    box.press("Shift+Enter")
    expect(box).to_have_value("abd dm\n")
    assert nb.cells.count() == cells_before
    nb.page.screenshot(path="/tmp/fe/jlab-keys.png")
