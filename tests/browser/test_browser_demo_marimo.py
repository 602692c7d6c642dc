"""Issue 13: ``./scripts/demo.sh --marimo`` (``chatwidget demo --marimo``) as a new user runs it.

The console script in a fresh environment prints marimo's URL; Chromium opens it, the marimo
quickstart runs its cells on open, and the widget answers on the offline demo's tiny model.
Ctrl+C then stops marimo, its kernel and the local hub, and leaves nothing behind.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_marimo import MarimoPage
from playwright.sync_api import Page, expect
from test_browser_demo import DEMO_SCRIPT, STARTUP_S, Demo, _ctrl_c, _free_port, _fresh_env

_URL_LINE = re.compile(r"marimo is running: (\S+)")
READY_MS = 90_000
STEP_MS = 30_000


@pytest.fixture
def marimo_demo(tmp_path: Path) -> Iterator[Demo]:
    """``chatwidget demo --marimo`` on a free port, in its own session, read line by line."""
    import queue
    import threading

    proc = subprocess.Popen(
        [str(DEMO_SCRIPT), "demo", "--marimo", "--no-browser", "--port", str(_free_port())],
        env=_fresh_env(tmp_path),
        cwd=tmp_path / "home",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, name="marimo-demo-output", daemon=True)
    reader.start()
    demo = Demo(proc, lines, [], tmp_path, [])
    try:
        yield demo
    finally:
        if proc.poll() is None:
            demo.descendants()
            proc.terminate()
            proc.wait(timeout=60)
        for child in demo.seen:
            if child.is_running():
                child.kill()
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.browser
def test_demo_marimo_opens_the_marimo_quickstart_and_ctrl_c_leaves_no_process(
    marimo_demo: Demo, browser_page: Page
) -> None:
    url = marimo_demo.wait_for_line(_URL_LINE, timeout=STARTUP_S).group(1)
    assert url.startswith("http://127.0.0.1:"), url
    assert "access_token=" in url, url
    mo = MarimoPage(browser_page)
    mo.open_url(url)
    mo.select_model("demo/tiny-chat")
    expect(mo.download_row("demo/tiny-chat")).to_contain_text("Ready", timeout=READY_MS)
    mo.send_message("Hello from marimo")
    expect(mo.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)
    expect(mo.assistant_messages.last.locator(".cw-meta-model")).to_have_attribute(
        "title", "demo/tiny-chat"
    )
    browser_page.close()  # a page left open on a stopped server logs refused connections
    # marimo's kernel is a multiprocessing child of the server (there is no ipykernel).
    _ctrl_c(marimo_demo, kernel_marker="multiprocessing")
