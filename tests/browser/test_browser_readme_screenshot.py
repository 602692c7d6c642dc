"""The README's screenshots, made reproducibly: a readable Markdown reply (a code block and a
table) from a deterministic "parrot" model, with a download in progress beside it, in the
light and the dark theme of JupyterLab.

Every run writes ``test-artifacts/screenshots/readme-{light,dark}.png``. With
``CHATWIDGET_UPDATE_DOCS=1`` (``./scripts/screenshots.sh``) it also writes
``docs/screenshot.png`` and ``docs/screenshot-dark.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_notebook import OpenWidget
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.parrot import build_parrot_model

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DOCS = REPO_ROOT / "docs"
PARROT = "demo/markdown-parrot"
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


@pytest.mark.browser
def test_readme_screenshot_markdown_reply_beside_a_download(
    theme: str, markdown_parrot: str, open_widget: OpenWidget, hub: LocalHub
) -> None:
    nb = open_widget(models=[markdown_parrot, SMALL])
    nb.probe("chat.set_settings(max_new_tokens=1)")  # one parroted reply, exactly
    nb.select_model(markdown_parrot)
    expect(nb.download_row(markdown_parrot)).to_contain_text("Ready", timeout=READY_MS)
    nb.send_message(QUESTION)
    reply = nb.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)
    body = reply.locator(".cw-msg-body")
    expect(body.locator("pre code")).to_contain_text("return text[::-1]")
    expect(body.locator("table tr")).to_have_count(4)

    hub.rate = 400_000  # a download in progress beside the reply
    nb.select_model(SMALL)
    nb.wait_for_progress_above(SMALL, 8, STEP_MS)
    hub.rate = 50_000  # hold it there while the picture is taken
    nb.page.evaluate("() => document.activeElement && document.activeElement.blur()")
    expect(nb.toasts).to_have_count(0, timeout=10_000)
    path = SCREENSHOTS / f"readme-{theme}.png"
    nb.screenshot(path)
    if os.environ.get("CHATWIDGET_UPDATE_DOCS") == "1":
        name = "screenshot.png" if theme == "light" else "screenshot-dark.png"
        shutil.copyfile(path, DOCS / name)
