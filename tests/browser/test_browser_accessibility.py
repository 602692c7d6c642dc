"""Issue 13: accessibility measured with axe-core, in JupyterLab, light and dark themes.

Three states each: idle (a finished reply on the screen), downloading with the cancel
confirmation open, and a failed download. axe-core runs all of its rules on the widget and
must find zero violations of any impact.
"""

from __future__ import annotations

import pytest
from browser_axe import audit, describe
from browser_notebook import NotebookPage, OpenWidget, Screenshot
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
TINY_B = "demo/tiny-chat-b"
SMALL = "demo/small-chat"
READY_MS = 90_000
STEP_MS = 30_000


def assert_no_violations(nb: NotebookPage, name: str) -> None:
    result = audit(nb.page, nb.widget.locator(".cw-root"), name)
    assert result["passes"] > 0, result  # axe really ran on the widget
    assert not result["violations"], (
        f"axe-core {result['version']} found violations in {name}:\n{describe(result)}"
    )


@pytest.fixture(params=["light", "dark"])
def theme(request: pytest.FixtureRequest) -> str:
    if request.param == "dark":
        request.getfixturevalue("dark_theme")
    return str(request.param)


@pytest.mark.browser
def test_axe_finds_no_violations_idle_downloading_with_dialog_and_failed(
    theme: str, open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget()
    nb.select_model(TINY)
    expect(nb.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    nb.send_message("Hello there")
    expect(nb.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)
    expect(nb.toasts).to_have_count(0, timeout=10_000)
    assert_no_violations(nb, f"{theme}-idle")

    hub.rate = 300_000  # demo/small-chat takes about 90 s: it is canceled long before
    nb.select_model(SMALL)
    nb.wait_for_progress_above(SMALL, 0, STEP_MS)
    nb.download_row(SMALL).get_by_role("button", name="Cancel", exact=True).click()
    dialog = nb.widget.get_by_role("alertdialog")
    expect(dialog).to_be_visible()
    screenshot(nb, f"{theme}-downloading-dialog")
    assert_no_violations(nb, f"{theme}-downloading-dialog")
    dialog.get_by_role("button", name="Cancel download").click()
    expect(nb.download_row(SMALL)).to_contain_text("Canceled", timeout=STEP_MS)

    hub.rate = None
    hub.inject(f"/{TINY_B}/resolve/*/model.safetensors", method="GET", status=500, times=None)
    nb.select_model(TINY_B)
    expect(nb.download_row(TINY_B)).to_contain_text("Failed", timeout=READY_MS)
    screenshot(nb, f"{theme}-failed")
    assert_no_violations(nb, f"{theme}-failed")
