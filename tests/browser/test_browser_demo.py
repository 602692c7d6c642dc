"""Issue 7: the README's ``chatwidget demo`` command, tried as a new user would.

The real console script starts in a fresh environment (its own HOME, temp folder, demo model
cache and Jupyter folders, nothing from this machine's Jupyter or Hugging Face set-up), prints
the JupyterLab URL, and headless Chromium runs the quickstart notebook top to bottom from the
Run menu. Then Ctrl+C (SIGINT to the demo's process group, as a terminal sends it) must stop
JupyterLab, the kernel and the local hub, and leave nothing behind. And a busy ``--port``
fails at once with a message that says so.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from browser_notebook import NotebookPage
from playwright.sync_api import Page, expect

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SCRIPT = REPO_ROOT / ".venv" / "bin" / "chatwidget"
QUICKSTART = REPO_ROOT / "notebooks" / "quickstart.ipynb"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
#: Building the three demo models into an empty cache, then JupyterLab's start.
STARTUP_S = 120.0
#: The whole notebook: kernel start, two downloads, three replies on a busy 2-core machine.
RUN_ALL_MS = 240_000
#: Ctrl+C until the demo has exited (it gives each child 10 s to stop before killing it).
STOP_S = 30.0
_URL_LINE = re.compile(r"JupyterLab is running: (\S+)")
#: Environment variables of this machine's set-up that a fresh machine would not have.
_FOREIGN_ENV = ("HF_", "HUGGINGFACE_", "CHATWIDGET_", "JUPYTER", "TRANSFORMERS_", "IPYTHONDIR")
#: JupyterLab's news and update-check pop-up: off, so no toast covers the page (and no
#: request leaves the machine).
_LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


@dataclass
class Demo:
    """The running ``chatwidget demo`` process and what it printed so far."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str]
    printed: list[str]
    tmp: Path
    #: Every descendant seen so far: the fixture kills any still running when the test ends.
    seen: list[psutil.Process]

    def descendants(self) -> list[psutil.Process]:
        """The processes the demo runs now (its children, theirs, ...), remembered."""
        now = psutil.Process(self.proc.pid).children(recursive=True)
        self.seen.extend(p for p in now if p not in self.seen)
        return now

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read the demo's output until a line matches ``pattern`` (fail if it exits first)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.printed.append(line)
            if match := pattern.search(line):
                return match
        raise AssertionError(
            f"`chatwidget demo` never printed {pattern.pattern!r} within {timeout:.0f} s "
            f"(exit code {self.proc.poll()}); it printed:\n" + "".join(self.printed)
        )

    def drain(self) -> str:
        """Everything printed that was not read yet (after the process exited)."""
        while not self.lines.empty():
            self.printed.append(self.lines.get_nowait())
        return "".join(self.printed)


def _fresh_env(tmp: Path) -> dict[str, str]:
    """This machine's environment less its Jupyter/HF set-up, with fresh folders instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    folders = {
        "HOME": tmp / "home",
        "TMPDIR": tmp / "tmp",
        "CHATWIDGET_DEMO_CACHE": tmp / "demo-hub",
        "JUPYTER_CONFIG_DIR": tmp / "jupyter" / "config",
        "JUPYTER_DATA_DIR": tmp / "jupyter" / "data",
        "JUPYTER_RUNTIME_DIR": tmp / "jupyter" / "runtime",
        # JupyterLab reads these two itself: the demo needs no option for them.
        "JUPYTERLAB_SETTINGS_DIR": tmp / "jupyter" / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": tmp / "jupyter" / "workspaces",
    }
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    for rel, value in _LAB_SETTINGS.items():
        path = tmp / "jupyter" / "lab-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value), encoding="utf-8")
    env["OMP_NUM_THREADS"] = "1"  # two cores shared by several people: keep torch modest
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_demo(tmp: Path, port: int) -> subprocess.Popen[str]:
    """``chatwidget demo --no-browser --port <port>`` in a fresh environment, in its own
    session (process group), as a terminal would run it."""
    return subprocess.Popen(
        [str(DEMO_SCRIPT), "demo", "--no-browser", "--port", str(port)],
        env=_fresh_env(tmp),
        cwd=tmp / "home",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """The demo on a free port, its output read line by line; stopped if the test did not."""
    proc = _start_demo(tmp_path, _free_port())
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, name="demo-output", daemon=True)
    reader.start()
    demo = Demo(proc, lines, [], tmp_path, [])
    try:
        yield demo
    finally:
        if proc.poll() is None:  # the test failed before its own Ctrl+C: clean up anyway
            demo.descendants()
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for child in demo.seen:  # whatever the demo failed to stop
            if _alive(child):
                child.kill()
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _alive(proc: psutil.Process) -> bool:
    """Still running (a zombie waiting for its parent to reap it has stopped)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _commands(procs: list[psutil.Process]) -> list[str]:
    commands = []
    for proc in procs:
        try:
            commands.append(" ".join(proc.cmdline()))
        except psutil.NoSuchProcess:
            continue
    return commands


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:160]}"
    except psutil.Error:
        return f"{proc.pid} (gone)"


def _quickstart_code_cells() -> list[tuple[int, str]]:
    """(index among all cells, source) of each code cell of the quickstart notebook."""
    cells = json.loads(QUICKSTART.read_text(encoding="utf-8"))["cells"]
    return [
        (i, "".join(cell["source"])) for i, cell in enumerate(cells) if cell["cell_type"] == "code"
    ]


def _cell_index(code_cells: list[tuple[int, str]], fragment: str) -> int:
    matches = [i for i, source in code_cells if fragment in source]
    assert len(matches) == 1, f"the quickstart should have one code cell with {fragment!r}"
    return matches[0]


def _run_all(nb: NotebookPage, code_cells: list[tuple[int, str]]) -> None:
    """Run > Run All Cells; wait until every cell ran; fail with a traceback if one raised."""
    prompts = nb.page.locator(".jp-CodeCell .jp-InputArea-prompt")
    last_prompt = nb.cells.nth(code_cells[-1][0]).locator(".jp-InputArea-prompt")
    nb.run_all()
    # Run All queues every cell at once: the last one shows [*] until the whole notebook ran.
    expect(last_prompt).to_have_text(re.compile(r"\[\*\]"), timeout=30_000)
    expect(prompts.filter(has_text="[*]")).to_have_count(0, timeout=RUN_ALL_MS)
    errors = nb.page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'
    )
    if errors.count():
        raise AssertionError(f"a quickstart cell raised:\n{errors.first.inner_text()}")
    # Every code cell ran once, in order, in the fresh kernel (none was skipped).
    expected = [f"[{n}]:" for n in range(1, len(code_cells) + 1)]
    assert [p.strip() for p in prompts.all_inner_texts()] == expected


def _assert_widget_shows_the_chat(nb: NotebookPage, code_cells: list[tuple[int, str]]) -> None:
    """The widget rendered in the ``chat`` cell, found by role and accessible name, and shows
    three finished replies: two from demo/tiny-chat, then one from demo/small-chat."""
    widget_cell = nb.cells.nth(next(i for i, source in code_cells if source.strip() == "chat"))
    widget = widget_cell.locator(".jp-OutputArea-output").filter(
        has=nb.page.get_by_role("region", name="Downloads")
    )
    expect(widget).to_have_count(1)
    expect(widget.get_by_role("combobox", name="Model")).to_be_visible()
    expect(widget.get_by_role("region", name="Downloads")).to_be_visible()
    expect(widget.get_by_role("textbox", name="Message", exact=True)).to_be_visible()
    replies = widget.locator("article.cw-msg-assistant")
    expect(widget.locator("article.cw-msg-user")).to_have_count(3)
    expect(replies).to_have_count(3)
    for n, model in enumerate(["demo/tiny-chat", "demo/tiny-chat", "demo/small-chat"]):
        expect(replies.nth(n)).to_have_attribute("data-status", "done")
        expect(replies.nth(n).locator(f'.cw-meta-model[title="{model}"]')).to_have_count(1)
    expect(widget.get_by_role("combobox", name="Model")).to_have_value("demo/small-chat")


def _assert_printed_outputs(nb: NotebookPage, code_cells: list[tuple[int, str]]) -> None:
    """What the quickstart's cells print: states, a reply, the switch and the history."""

    def output(fragment: str) -> str:
        return "\n".join(nb.output_of(_cell_index(code_cells, fragment)).all_inner_texts())

    assert output("print(chat.select_model(FIRST))").split() == [
        "Queued",
        "Ready",
        "|",
        "active:",
        "demo/tiny-chat",
    ]
    hello = output('chat.send("Hello! What can you do?")')
    assert hello.strip(), "the first reply (from demo/tiny-chat) printed nothing"
    switching = output("print('still chatting with:'")
    for text in (
        "requested: demo/small-chat",
        "still chatting with: demo/tiny-chat",
        "answered by: demo/tiny-chat",
    ):
        assert text in switching, switching
    switched = output("print('active:'")
    assert switched.startswith("active: demo/small-chat\n"), switched
    assert switched.split("\n", 1)[1].strip(), f"no reply from demo/small-chat: {switched!r}"
    history = output("for m in chat.messages")
    assert len(re.findall(r"^assistant demo/tiny-chat ", history, re.M)) == 2, history
    assert len(re.findall(r"^assistant demo/small-chat ", history, re.M)) == 1, history
    assert len(re.findall(r"^user ", history, re.M)) == 3, history


def _ctrl_c(demo: Demo, kernel_marker: str = "ipykernel") -> float:
    """Send Ctrl+C as a terminal does (SIGINT to the demo's process group); wait for the exit
    and check nothing it started is left. Returns the seconds it took to exit."""
    children = demo.descendants()
    commands = _commands(children)
    assert any(kernel_marker in c for c in commands), f"no kernel running: {commands}"
    started = time.monotonic()
    os.killpg(demo.proc.pid, signal.SIGINT)
    try:
        code = demo.proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"`chatwidget demo` still runs {STOP_S:.0f} s after Ctrl+C:\n{demo.drain()}"
        ) from None
    took = time.monotonic() - started
    printed = demo.drain()
    assert code == 0, f"exit code {code} after Ctrl+C:\n{printed}"
    assert "Stopping" in printed, printed
    assert "Traceback" not in printed, f"Ctrl+C printed a traceback:\n{printed}"
    left = [p for p in children if _alive(p)]
    assert not left, "left running after Ctrl+C:\n" + "\n".join(map(_describe, left))
    # torch makes its per-user compile cache folder (``torchinductor_<user>``) in the temp
    # folder on import, in any program: that one is torch's, not a leftover of the demo.
    leftovers = sorted(
        p.name for p in (demo.tmp / "tmp").iterdir() if not p.name.startswith("torchinductor_")
    )
    assert not leftovers, f"the demo left files in its temp folder: {leftovers}"
    return took


@pytest.mark.browser
def test_demo_command_runs_quickstart_in_chromium_and_ctrl_c_leaves_no_process(
    demo: Demo, browser_page: Page
) -> None:
    started = time.monotonic()
    url = demo.wait_for_line(_URL_LINE, timeout=STARTUP_S).group(1)
    assert url.startswith("http://127.0.0.1:"), url
    assert "/lab/tree/quickstart.ipynb?token=" in url, f"not the quickstart, logged in: {url}"
    serving_s = time.monotonic() - started
    commands = _commands(demo.descendants())
    assert any(re.search(r"jupyter[ -]lab", c) for c in commands), commands
    assert any("chatwidget.testing.hub serve" in c for c in commands), commands

    nb = NotebookPage(browser_page, None, "quickstart.ipynb", "lab")
    nb.open_url(url)
    code_cells = _quickstart_code_cells()
    _run_all(nb, code_cells)
    run_all_s = time.monotonic() - started - serving_s
    _assert_widget_shows_the_chat(nb, code_cells)
    nb.screenshot(SCREENSHOTS / "test_demo_command_runs_quickstart-after-run-all.png")
    _assert_printed_outputs(nb, code_cells)

    # Close the tab first: a page still open on a stopped server logs refused connections.
    # (The browser_page fixture fails the test on any console error seen until then.)
    nb.page.close()
    stop_s = _ctrl_c(demo)
    print(
        f"\n`chatwidget demo` served after {serving_s:.1f} s, Run All took {run_all_s:.1f} s, "
        f"Ctrl+C stopped it in {stop_s:.1f} s; it printed:\n{''.join(demo.printed)}"
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_demo_on_a_busy_port_fails_fast_and_says_so(busy_port: int, tmp_path: Path) -> None:
    """JupyterLab must not move to the next port: the demo would print a wrong URL and wait
    on the busy port until its start-up timeout (120 s)."""
    proc = _start_demo(tmp_path, busy_port)
    try:
        printed, _ = proc.communicate(timeout=STARTUP_S / 2)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        printed, _ = proc.communicate(timeout=STOP_S)
        raise AssertionError(
            f"the demo still waited on busy port {busy_port}:\n{printed}"
        ) from None
    assert proc.returncode == 1, printed
    assert "JupyterLab is running" not in printed, printed
    assert f"JupyterLab did not start on port {busy_port}: is the port free?" in printed, printed
