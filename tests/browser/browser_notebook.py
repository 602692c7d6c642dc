"""Drive a notebook in JupyterLab or Notebook 7 like a user: open, run, probe the kernel.

Every wait here is Playwright's own (``expect`` with a timeout, ``wait_for_function``) or a
loop with a deadline that re-runs a cell; nothing sleeps.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import nbformat
from browser_jupyter import JupyterServer
from playwright.sync_api import Locator, Page, expect

App = Literal["lab", "notebook7"]
#: The ``open_widget`` fixture: ``open_widget(models=..., app=..., setup=...) -> NotebookPage``.
OpenWidget = Callable[..., "NotebookPage"]
#: The ``screenshot`` fixture: ``screenshot(nb, step) -> path of the picture``.
Screenshot = Callable[["NotebookPage", str], Path]

#: Kernel start plus ``import chatwidget`` (torch, transformers) on a busy 2-core machine.
KERNEL_TIMEOUT_MS = 90_000
#: The first cell builds the widget (runtime, downloader, engine) before it is displayed.
RENDER_TIMEOUT_MS = 90_000
#: How long a cell may take to show it started after Run All (the front end alone: ``[*]:``).
RUN_START_TIMEOUT_MS = 15_000
#: The prompt of a cell that never ran.
_NOT_RUN = re.compile(r"^\s*\[ \]:\s*$")
#: Marks the line a probe cell prints, so a stale output from an earlier run never counts.
_PROBE_MARK = "@@probe"

_KERNEL_READY_JS = """
() => {
  const name = document.querySelector('.jp-Toolbar-kernelName');
  const label = name ? (name.getAttribute('aria-label') || name.textContent || '') : '';
  const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return !!name && label.trim() !== '' && !/No Kernel/i.test(label)
    && !!status && status.getAttribute('data-status') === 'idle';
}
"""


#: Installed before the page loads (and again on reload): remembers every toast that appeared
#: in a notebook output and every status an assistant message went through, so a test can
#: assert on things that were on screen only for a moment.
_RECORDER_JS = """
(() => {
  window.__cw = { toasts: [], replies: [], highlights: 0 };
  let highlighted = false;
  const seenToasts = new WeakSet();
  const scan = () => {
    const lit = !!document.querySelector('.jp-OutputArea-output .cw-selector.cw-switched');
    if (lit && !highlighted) window.__cw.highlights += 1;
    highlighted = lit;
    for (const el of document.querySelectorAll('.jp-OutputArea-output [role="status"]')) {
      if (!seenToasts.has(el)) {
        seenToasts.add(el);
        window.__cw.toasts.push((el.textContent || '').replace('\u2713', '').trim());
      }
    }
    for (const msg of document.querySelectorAll('.jp-OutputArea-output article.cw-msg-assistant')) {
      const body = msg.querySelector('.cw-msg-body');
      const entry = { id: msg.dataset.id, status: msg.dataset.status,
                      length: body ? (body.textContent || '').length : 0 };
      const last = window.__cw.replies.filter((r) => r.id === entry.id).pop();
      if (!last || last.status !== entry.status || last.length !== entry.length) {
        window.__cw.replies.push(entry);
      }
    }
  };
  new MutationObserver(scan).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
    attributeFilter: ['data-status', 'class'],
  });
})();
"""


def _rgba(css: str) -> tuple[float, ...]:
    """``rgb(1, 2, 3)`` / ``rgba(1, 2, 3, 0.5)`` -> (1, 2, 3[, 0.5])."""
    return tuple(float(part) for part in re.findall(r"[\d.]+", css))


def luminance(rgb: tuple[float, ...]) -> float:
    """Relative luminance (WCAG) of an sRGB colour, 0 (black) to 1 (white)."""

    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """Write a notebook of code cells with the python3 kernel spec."""
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]  # type: ignore[no-untyped-call]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))  # type: ignore[no-untyped-call]
    return path


class NotebookPage:
    """One notebook open in a page of JupyterLab or Notebook 7."""

    def __init__(self, page: Page, server: JupyterServer | None, name: str, app: App) -> None:
        self.page = page
        self.server = server
        self.name = name
        self.app = app
        self._probes = 0

    # -- opening and running

    def open(self) -> None:
        """Open the notebook and wait until its kernel is idle (Run All is ignored before)."""
        if self.server is None:
            raise ValueError("this page has no JupyterServer to build its URL: use open_url()")
        workspace = re.sub(r"[^A-Za-z0-9_-]", "-", self.name.removesuffix(".ipynb"))
        url = (
            self.server.lab_url(self.name, workspace)
            if self.app == "lab"
            else self.server.notebook7_url(self.name)
        )
        self.open_url(url)

    def open_url(self, url: str) -> None:
        """Open ``url`` (e.g. one a server started elsewhere printed) and wait for its kernel."""
        self.page.add_init_script(_RECORDER_JS)
        self.page.goto(url)
        expect(self.cells.first).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
        self.wait_for_kernel()

    def wait_for_kernel(self) -> None:
        self.page.wait_for_function(_KERNEL_READY_JS, timeout=KERNEL_TIMEOUT_MS)

    def run_all(self) -> None:
        """Run > Run All Cells, through the menu bar like a user, and wait until the first cell
        has started (its prompt leaves ``[ ]:``). On a loaded machine a click on the menu as it
        opens was seen lost once (both cells still ``[ ]:`` 90 s later, the kernel idle); then
        the menu is closed and used again, as a user would, at most twice more. A cell that
        started is never run again."""
        not_started = self.cells.first.locator(".jp-InputPrompt", has_text=_NOT_RUN)
        for attempt in range(3):
            self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            self.page.locator('li[data-command="runmenu:run-all"]').click()
            try:
                expect(not_started).to_have_count(0, timeout=RUN_START_TIMEOUT_MS)
                return
            except AssertionError:
                if attempt == 2:
                    raise
                self.page.keyboard.press("Escape")  # a menu left open

    def reload(self) -> None:
        """Save, then reload the page; the widget comes back from the kernel's state."""
        self.page.keyboard.press("ControlOrMeta+s")
        expect(self.page.locator(".jp-mod-dirty")).to_have_count(0, timeout=10_000)
        self.page.reload()
        expect(self.cells.first).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
        self.wait_for_kernel()

    @property
    def cells(self) -> Locator:
        return self.page.locator(".jp-Notebook .jp-Cell")

    def output_of(self, index: int) -> Locator:
        return self.cells.nth(index).locator(".jp-OutputArea-output")

    # -- the widget, by role and accessible name

    @property
    def widget(self) -> Locator:
        """The output area that holds the chat widget (the one with a "Downloads" region)."""
        return self.page.locator(".jp-OutputArea-output").filter(
            has=self.page.get_by_role("region", name="Downloads")
        )

    def wait_for_widget(self) -> None:
        """Wait until the widget shows; fail at once with the traceback if the cell raised."""
        failed = self.cells.first.locator('[data-mime-type="application/vnd.jupyter.error"]')
        expect(self.model_select.or_(failed).first).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        if failed.count():
            raise AssertionError(f"the widget's cell raised:\n{failed.first.inner_text()}")

    @property
    def model_select(self) -> Locator:
        return self.widget.get_by_role("combobox", name="Model")

    @property
    def downloads(self) -> Locator:
        return self.widget.get_by_role("region", name="Downloads")

    def download_row(self, repo_id: str) -> Locator:
        """A download manager row: a group named by the repo id."""
        return self.downloads.get_by_role("group", name=repo_id, exact=True)

    def progress_of(self, repo_id: str) -> Locator:
        return self.download_row(repo_id).get_by_role("progressbar")

    @property
    def pending_label(self) -> Locator:
        """The selector's "Waiting for <model> (<state>)" line."""
        return self.widget.locator(".cw-pending")

    @property
    def message_box(self) -> Locator:
        return self.widget.get_by_role("textbox", name="Message", exact=True)

    @property
    def send_button(self) -> Locator:
        return self.widget.get_by_role("button", name="Send", exact=True)

    @property
    def toasts(self) -> Locator:
        return self.widget.get_by_role("status")

    @property
    def assistant_messages(self) -> Locator:
        return self.widget.locator("article.cw-msg-assistant")

    @property
    def user_messages(self) -> Locator:
        return self.widget.locator("article.cw-msg-user")

    def toasts_seen(self) -> list[str]:
        """The text of every toast shown since the page (re)loaded, oldest first."""
        return list(self.page.evaluate("() => window.__cw.toasts"))

    def wait_for_toast(self, text: str, timeout_ms: float) -> None:
        """Wait until a toast with exactly ``text`` has been shown (it may be gone again)."""
        self.page.wait_for_function(
            "(text) => window.__cw.toasts.includes(text)", arg=text, timeout=timeout_ms
        )

    def selector_highlights(self) -> int:
        """How many times the selector's "switched" highlight came on since the page loaded."""
        return int(self.page.evaluate("() => window.__cw.highlights"))

    def reply_history(self) -> list[dict[str, Any]]:
        """Each (status, text length) an assistant message went through, in order."""
        return list(self.page.evaluate("() => window.__cw.replies"))

    def wait_for_progress_above(self, repo_id: str, value: float, timeout_ms: float) -> float:
        """Wait until ``repo_id``'s progress bar passes ``value``; return its aria-valuenow."""
        bar = self.progress_of(repo_id).element_handle(timeout=timeout_ms)
        self.page.wait_for_function(
            "([bar, v]) => Number(bar.getAttribute('aria-valuenow')) > v",
            arg=[bar, value],
            timeout=timeout_ms,
        )
        return float(self.progress_of(repo_id).get_attribute("aria-valuenow") or 0)

    def select_model(self, repo_id: str) -> None:
        """Pick a model as a user does: the list has focus when its value changes (Playwright's
        ``select_option`` alone leaves focus where it was, a cell editor say)."""
        self.model_select.focus()
        self.model_select.select_option(repo_id)

    def send_message(self, text: str) -> None:
        """Type into the message box and press Enter (Enter sends)."""
        self.message_box.click()
        self.message_box.fill(text)
        self.message_box.press("Enter")

    # -- the kernel side

    def probe(
        self,
        expression: str,
        until: Callable[[Any], bool] = lambda _value: True,
        timeout: float = 60.0,
    ) -> Any:
        """Evaluate ``expression`` in the kernel through the notebook's last cell.

        The cell prints the expression's value as JSON; it is run again until ``until`` holds
        for the value or ``timeout`` seconds pass (syncing takes a moment). Returns the value.
        """
        deadline = time.monotonic() + timeout
        cell = self.cells.last
        value: Any = None
        while True:
            self._probes += 1
            mark = f"{_PROBE_MARK}{self._probes}:"
            code = f"import json as _json\nprint({mark!r} + _json.dumps({expression}))"
            editor = cell.locator(".jp-InputArea-editor")
            editor.click()
            self.page.keyboard.press("ControlOrMeta+a")
            self.page.keyboard.insert_text(code)
            self.page.keyboard.press("Control+Enter")
            output = cell.locator(".jp-OutputArea-output")
            left_ms = max(1_000.0, (deadline - time.monotonic()) * 1000)
            expect(output.filter(has_text=mark)).to_have_count(1, timeout=left_ms)
            text = output.filter(has_text=mark).inner_text()
            value = json.loads(text.split(mark, 1)[1].strip())
            if until(value):
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"kernel probe {expression!r} never met the condition within "
                    f"{timeout:.0f} s; last value: {value!r}"
                )

    def colors(self) -> dict[str, tuple[float, ...]]:
        """Computed colours of the widget: its background and the text of the first assistant
        message (the user's bubble is white on the accent colour in every theme)."""
        raw = self.widget.locator(".cw-root").evaluate(
            """(root) => {
              const text = root.querySelector('.cw-msg-assistant .cw-msg-body') || root;
              return { background: getComputedStyle(root).backgroundColor,
                       text: getComputedStyle(text).color };
            }"""
        )
        return {name: _rgba(value) for name, value in raw.items()}

    # -- artifacts

    def screenshot(self, path: Path) -> None:
        """Save a picture of the widget's output area (the whole page if it is missing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.widget.count():
            self.widget.first.screenshot(path=str(path), animations="disabled")
        else:
            self.page.screenshot(path=str(path), full_page=True)
