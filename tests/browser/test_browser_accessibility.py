"""Issue 13: accessibility measured with axe-core, in JupyterLab, light and dark themes; and
the README's screenshots, taken on the way.

Three states each: idle (a finished Markdown reply with a code block and a table on the
screen, the settings open), downloading with the cancel confirmation open, and a failed
download. axe-core runs all of its rules on the widget and must find zero violations of any
impact.

The reply comes from ``demo/markdown-parrot``, a deterministic "parrot" model whose one reply
is :data:`MARKDOWN_REPLY`. With a second model downloading beside it, the widget is saved as
``test-artifacts/screenshots/readme-{light,dark}.png``; with ``CHATWIDGET_UPDATE_DOCS=1``
(``./scripts/screenshots.sh``) also as ``docs/screenshot.png`` and ``docs/screenshot-dark.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_axe import audit, describe
from browser_notebook import NotebookPage, OpenWidget, Screenshot
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.parrot import build_parrot_model

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DOCS = REPO_ROOT / "docs"
PARROT = "demo/markdown-parrot"
TINY_B = "demo/tiny-chat-b"
SMALL = "demo/small-chat"
READY_MS = 90_000
STEP_MS = 30_000
QUESTION = "How do I reverse a string in Python?"
#: The parrot's one reply: Markdown with a code block and a table.
MARKDOWN_REPLY = '''Slice it with a step of -1: the slice walks the string from its end.

```python
def reverse(text: str) -> str:
    """Return text backwards."""
    return text[::-1]
```

| `text` | `reverse(text)` |
| --- | --- |
| `"chat"` | `"tahc"` |
| `"widget"` | `"tegdiw"` |
| `"level"` | `"level"` (a palindrome) |'''


@pytest.fixture(scope="session")
def markdown_parrot(hub_root: Path) -> str:
    """Build ``demo/markdown-parrot`` into the hub once: its replies are MARKDOWN_REPLY."""
    if not (hub_root / PARROT / "config.json").is_file():
        build_parrot_model(hub_root, PARROT, text=MARKDOWN_REPLY)
    return PARROT


@pytest.fixture(params=["light", "dark"])
def theme(request: pytest.FixtureRequest) -> str:
    if request.param == "dark":
        request.getfixturevalue("dark_theme")
    return str(request.param)


def assert_no_violations(nb: NotebookPage, name: str) -> None:
    result = audit(nb.page, nb.widget.locator(".cw-root"), name)
    assert result["passes"] > 0, result  # axe really ran on the widget
    assert not result["violations"], (
        f"axe-core {result['version']} found violations in {name}:\n{describe(result)}"
    )


def readme_screenshot(nb: NotebookPage, theme: str) -> None:
    """Save the widget for the README: no focus ring, no toast."""
    nb.page.evaluate("() => document.activeElement && document.activeElement.blur()")
    expect(nb.toasts).to_have_count(0, timeout=10_000)
    path = SCREENSHOTS / f"readme-{theme}.png"
    nb.screenshot(path)
    if os.environ.get("CHATWIDGET_UPDATE_DOCS") == "1":
        shutil.copyfile(
            path, DOCS / ("screenshot.png" if theme == "light" else "screenshot-dark.png")
        )


@pytest.mark.browser
def test_axe_finds_no_violations_idle_downloading_with_dialog_and_failed(
    theme: str,
    markdown_parrot: str,
    open_widget: OpenWidget,
    hub: LocalHub,
    screenshot: Screenshot,
) -> None:
    nb = open_widget(models=[markdown_parrot, SMALL, TINY_B])
    nb.probe("chat.set_settings(max_new_tokens=1)")  # one parroted reply, exactly
    nb.select_model(markdown_parrot)
    expect(nb.download_row(markdown_parrot)).to_contain_text("Ready", timeout=READY_MS)
    nb.send_message(QUESTION)
    reply = nb.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)
    body = reply.locator(".cw-msg-body")
    expect(body.locator("pre code")).to_contain_text("return text[::-1]")
    expect(body.locator("table tr")).to_have_count(4)
    expect(nb.toasts).to_have_count(0, timeout=10_000)
    settings = nb.widget.locator("summary", has_text="Settings")
    settings.click()  # the settings too (greedy: temperature and top p are disabled)
    expect(nb.widget.get_by_label("Temperature")).to_be_disabled()
    assert_no_violations(nb, f"{theme}-idle")
    settings.click()

    hub.rate = 400_000  # a download in progress beside the reply
    nb.select_model(SMALL)
    nb.wait_for_progress_above(SMALL, 8, STEP_MS)
    hub.rate = 50_000  # hold it there while the picture is taken and axe runs
    readme_screenshot(nb, theme)
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
