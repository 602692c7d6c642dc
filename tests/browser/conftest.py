"""Fixtures for the browser tests: a local hub, one Jupyter server, one headless Chromium.

The hub (``local_hub`` from tests/conftest.py) runs in this process on loopback, so a test
can throttle it and inject faults while the kernel (a child of the Jupyter server) downloads
from it. Each test gets a fresh page that records console and page errors (any error fails
the test), its own notebook and its own HF cache; its kernel is shut down when it ends.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from browser_jupyter import JupyterServer
from browser_notebook import App, NotebookPage, OpenWidget, Screenshot, write_notebook
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    ViewportSize,
    sync_playwright,
)

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.parrot import build_parrot_model

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHATWIDGET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # runs as root here
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",  # else Chromium keeps calling outside hosts
    "--disable-component-update",
]
#: Bytes per second the hub sends: demo/small-chat (about 27 MB) takes about 7 s.
HUB_RATE = 4_000_000
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
PARROT_REPO = "demo/parrot"
#: How the first cell imports the widget.
WIDGET_IMPORT = "from chatwidget import ChatWidget"


@pytest.fixture
def hub(local_hub: LocalHub, small_repo: str) -> LocalHub:
    """The session's local hub (tiny and small demo models), reset for this test (no faults,
    empty request log) and throttled to :data:`HUB_RATE`."""
    local_hub.rate = HUB_RATE
    return local_hub


@pytest.fixture(scope="session")
def parrot_repo(hub_root: Path) -> str:
    """Build ``demo/parrot`` (its greedy replies repeat an HTML payload) into the hub once."""
    if not (hub_root / PARROT_REPO / "config.json").is_file():
        build_parrot_model(hub_root, PARROT_REPO)
    return PARROT_REPO


@pytest.fixture(scope="session")
def jupyter(
    tmp_path_factory: pytest.TempPathFactory, _session_hub: LocalHub
) -> Iterator[JupyterServer]:
    """One Jupyter server for the session (JupyterLab and Notebook 7)."""
    base = tmp_path_factory.mktemp("jupyter")
    env = {
        "HF_ENDPOINT": _session_hub.url,
        "HF_HOME": str(base / "hf-home"),
        "HF_HUB_CACHE": str(base / "hf-home" / "hub"),
        "HF_XET_CACHE": str(base / "hf-home" / "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",  # two cores, shared: keep the kernels' torch modest
        # The shipped notebooks (quickstart.ipynb) run offline on this hub, as in the demo.
        "CHATWIDGET_OFFLINE": "1",
        "CHATWIDGET_HUB_URL": _session_hub.url,
        # Conversations of this session's kernels, never the user's own history file; each
        # notebook (one per test) is its own workspace in it.
        "CHATWIDGET_HISTORY": str(base / "history.sqlite3"),
    }
    server = JupyterServer(base, env)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def notebook_server(jupyter: JupyterServer) -> Iterator[JupyterServer]:
    """The session's Jupyter server, for a test that opens its own notebook (not through
    ``open_widget``): every kernel is shut down when the test ends, as ``open_widget`` does,
    so no loaded model is left running into the next test."""
    yield jupyter
    jupyter.shutdown_kernels()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


#: Errors Notebook 7's own code raises, with no frame of ours: (message, where every frame is).
#: - its shortcuts settings plugin reads ``.schema`` of a plugin it has not loaded (on every
#:   load, also of a notebook with no widget);
#: - its file browser restore runs ``filebrowser:open-path``, a command Notebook 7 does not
#:   register (now and then, on a busy machine).
#: They are kept in ``BrowserErrors.upstream`` and do not fail a test; anything else does.
_NOTEBOOK7_CORE = re.compile(r"/static/notebook/[\w.-]+\.js")
KNOWN_UPSTREAM_ERRORS = (
    ("Cannot read properties of undefined (reading 'schema')", _NOTEBOOK7_CORE),
    ("Command 'filebrowser:open-path' not registered.", _NOTEBOOK7_CORE),
)


class BrowserErrors:
    """Console errors, uncaught page errors and native dialogs seen by one page."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.upstream: list[str] = []

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.entries.append(f"console.error: {message.text} ({message.location})")

    def on_page_error(self, error: Error) -> None:
        frames = (error.stack or "").splitlines()[1:8]
        entry = f"page error: {error.message}\n    " + "\n    ".join(frames)
        for message, where in KNOWN_UPSTREAM_ERRORS:
            located = [f for f in frames if "://" in f]  # skip "at async Promise.all"
            if error.message == message and located and all(where.search(f) for f in located):
                self.upstream.append(entry)
                return
        self.entries.append(entry)

    def on_dialog(self, dialog: Dialog) -> None:
        """A native alert/confirm (e.g. from injected markup) is an error; dismiss it."""
        self.entries.append(f"native {dialog.type} dialog: {dialog.message!r}")
        dialog.dismiss()

    def assert_none(self) -> None:
        assert not self.entries, "the browser reported errors:\n" + "\n".join(self.entries)


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


@pytest.fixture
def browser_page(chromium: Browser, browser_errors: BrowserErrors) -> Iterator[Page]:
    """A fresh page (own context) whose console and page errors fail the test."""
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.on("console", browser_errors.on_console)
    page.on("pageerror", browser_errors.on_page_error)
    page.on("dialog", browser_errors.on_dialog)
    yield page
    context.close()
    browser_errors.assert_none()


@pytest.fixture
def open_widget(
    request: pytest.FixtureRequest,
    browser_page: Page,
    jupyter: JupyterServer,
    hub: LocalHub,
    tmp_path: Path,
) -> Iterator[OpenWidget]:
    """Write a notebook whose first cell displays ``chat = ChatWidget(models=...)``, open it
    in JupyterLab (or Notebook 7), wait for the kernel, Run All, and wait for the widget."""
    cache_dir = tmp_path / "hf-cache"

    def open_(
        models: Sequence[str] = ("demo/tiny-chat", "demo/tiny-chat-b", "demo/small-chat"),
        app: App = "lab",
        setup: str = "",
    ) -> NotebookPage:
        name = f"{request.node.name}.ipynb".replace("[", "-").replace("]", "")
        first_cell = (
            f"{WIDGET_IMPORT}\n"
            f"{setup}"
            f"chat = ChatWidget(models={list(models)!r}, cache_dir={str(cache_dir)!r})\n"
            "chat"
        )
        write_notebook(jupyter.root_dir / name, [first_cell, "# kernel probes run here"])
        nb = NotebookPage(browser_page, jupyter, name, app)
        nb.open()
        nb.run_all()
        nb.wait_for_widget()
        return nb

    yield open_
    jupyter.shutdown_kernels()


@pytest.fixture
def dark_theme(jupyter: JupyterServer) -> Iterator[str]:
    """JupyterLab Dark for this test's pages (Lab and Notebook 7); light again afterwards."""
    jupyter.set_theme("JupyterLab Dark")
    yield "JupyterLab Dark"
    jupyter.set_theme("JupyterLab Light")


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshot:
    """Save the widget's picture as ``test-artifacts/screenshots/<test>-<step>.png``."""

    def take(nb: NotebookPage, step: str) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{step}.png"
        nb.screenshot(path)
        return path

    return take
