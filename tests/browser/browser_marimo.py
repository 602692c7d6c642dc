"""A throw-away marimo server (``marimo edit`` or ``marimo run``) for the browser tests.

It serves a copy of ``notebooks/marimo_quickstart.py`` (marimo edit may rewrite the file it
edits), with ``CHATWIDGET_OFFLINE=1`` and
``CHATWIDGET_HUB_URL`` pointing the notebook's ``offline.widget_kwargs()`` at the test's
local hub, and a fresh HOME, temp folder and HF cache, so nothing from this machine's marimo
or Hugging Face set-up leaks in. The copy sits beside a ``pyproject.toml`` with the
repository's ``[tool.marimo]`` table (``runtime.auto_instantiate = true``), so ``marimo edit``
runs the cells on open, as it does in the checkout, and as ``marimo run`` always does.

marimo renders every widget inside a shadow root. Playwright's role and CSS locators pierce
open shadow roots; ``document.querySelector`` does not, so the recorder below walks them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from browser_jupyter import free_port
from browser_notebook import RENDER_TIMEOUT_MS, NotebookPage
from browser_notebook import _rgba as rgba
from playwright.sync_api import Locator, Page, expect

from chatwidget.offline import stop_tree

log = logging.getLogger("chatwidget.tests.browser")

REPO_ROOT = Path(__file__).resolve().parents[2]
MARIMO_QUICKSTART = REPO_ROOT / "notebooks" / "marimo_quickstart.py"
Mode = Literal["edit", "run"]

#: Installed before the page loads: every 50 ms, remembers each toast text seen in any
#: (shadow) root, and each (status, length) an assistant message went through, so a test can
#: assert on things that were on screen only for a moment.
DEEP_RECORDER_JS = """
(() => {
  window.__cw = { toasts: [], replies: [] };
  const seen = new WeakSet();
  const roots = () => {
    const out = [document];
    for (let i = 0; i < out.length; i++) {
      for (const el of out[i].querySelectorAll('*')) if (el.shadowRoot) out.push(el.shadowRoot);
    }
    return out;
  };
  setInterval(() => {
    for (const root of roots()) {
      for (const el of root.querySelectorAll('.cw-root [role="status"]')) {
        if (!seen.has(el)) {
          seen.add(el);
          window.__cw.toasts.push((el.textContent || '').replace('\\u2713', '').trim());
        }
      }
      for (const msg of root.querySelectorAll('article.cw-msg-assistant')) {
        const body = msg.querySelector('.cw-msg-body');
        const entry = { id: msg.dataset.id, status: msg.dataset.status,
                        length: body ? (body.textContent || '').length : 0 };
        const last = window.__cw.replies.filter((r) => r.id === entry.id).pop();
        if (!last || last.status !== entry.status || last.length !== entry.length) {
          window.__cw.replies.push(entry);
        }
      }
    }
  }, 50);
})();
"""


def _marimo_project_config(theme: str) -> str:
    """A pyproject.toml holding only the repository's ``[tool.marimo]`` settings, and
    marimo's display theme ("light" or "dark")."""
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        runtime = tomllib.load(f)["tool"]["marimo"]["runtime"]
    lines = ["[tool.marimo.runtime]"]
    lines += [f"{key} = {str(value).lower()}" for key, value in runtime.items()]
    lines += ["[tool.marimo.display]", f'theme = "{theme}"']
    return "\n".join(lines) + "\n"


class MarimoServer:
    """``marimo edit|run <notebook>`` in a child process on a free loopback port."""

    def __init__(
        self, base: Path, mode: Mode, env: Mapping[str, str], theme: str = "light"
    ) -> None:
        self.base = base
        self.mode = mode
        self.theme = theme
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self._extra_env = dict(env)
        self._proc: subprocess.Popen[str] | None = None
        self._log_path = base / f"marimo-{mode}.log"

    @property
    def url(self) -> str:
        """The page a user opens (logged in through the access token)."""
        return f"http://127.0.0.1:{self.port}/?access_token={self.token}"

    def start(self, notebook: Path = MARIMO_QUICKSTART, timeout: float = 60.0) -> None:
        """Start the server and wait until ``/health`` answers."""
        home, tmp, folder = self.base / "home", self.base / "tmp", self.base / "notebooks"
        for path in (home, tmp, folder):
            path.mkdir(parents=True, exist_ok=True)
        copy = folder / notebook.name
        shutil.copyfile(notebook, copy)
        (folder / "pyproject.toml").write_text(_marimo_project_config(self.theme), encoding="utf-8")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MARIMO", "XDG_"))},
            "HOME": str(home),
            "TMPDIR": str(tmp),
            **self._extra_env,
        }
        cmd = [
            sys.executable,
            "-m",
            "marimo",
            self.mode,
            str(copy),
            "--headless",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--token-password={self.token}",
            "--no-sandbox",
        ]
        if self.mode == "edit":
            cmd.append("--skip-update-check")
        with self._log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(folder),
                text=True,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"marimo {self.mode} exited with {self._proc.returncode} before it served; "
                    f"its log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/health", timeout=2.0
                ) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.2)
        self.stop()
        raise RuntimeError(f"marimo did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server, its kernels and their download processes."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_tree(proc)


class MarimoPage(NotebookPage):
    """The chat widget in a marimo page: the same locators as in Jupyter (by role and
    accessible name), found inside marimo's shadow roots."""

    def __init__(self, page: Page) -> None:
        super().__init__(page, None, "marimo_quickstart.py", "lab")

    def open_url(self, url: str) -> None:
        self.page.add_init_script(DEEP_RECORDER_JS)
        self.page.goto(url)
        self.wait_for_widget()

    @property
    def widget(self) -> Locator:
        return self.page.locator(".cw-root")

    def wait_for_widget(self) -> None:
        """Wait until the widget shows (kernel start and ``import chatwidget`` included)."""
        expect(self.model_select).to_be_visible(timeout=RENDER_TIMEOUT_MS)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.widget.first.screenshot(path=str(path), animations="disabled")

    def colors(self) -> dict[str, tuple[float, ...]]:
        """Computed colours: the widget's background and its first reply's text."""
        raw = self.widget.first.evaluate(
            """(root) => {
              const text = root.querySelector('.cw-msg-assistant .cw-msg-body') || root;
              return { background: getComputedStyle(root).backgroundColor,
                       text: getComputedStyle(text).color };
            }"""
        )
        return {name: rgba(value) for name, value in raw.items()}
