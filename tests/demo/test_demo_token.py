"""``chatwidget demo`` hands JupyterLab (or marimo) its token through a private file, never argv."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SCRIPT = REPO_ROOT / ".venv" / "bin" / "chatwidget"
STARTUP_S = 180.0
_URL_LINE = re.compile(r"(?:JupyterLab|marimo) is running: (\S+)")
_FOREIGN_ENV = ("HF_", "HUGGINGFACE_", "CHATWIDGET_", "JUPYTER", "TRANSFORMERS_", "IPYTHONDIR")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    for name, rel in (
        ("HOME", "home"),
        ("TMPDIR", "tmp"),
        ("CHATWIDGET_DEMO_CACHE", "demo-hub"),
        ("JUPYTER_CONFIG_DIR", "jupyter/config"),
        ("JUPYTER_DATA_DIR", "jupyter/data"),
        ("JUPYTER_RUNTIME_DIR", "jupyter/runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "jupyter/lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "jupyter/workspaces"),
    ):
        (tmp / rel).mkdir(parents=True, exist_ok=True)
        env[name] = str(tmp / rel)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _status(port: int, token: str | None) -> int:
    query = f"?token={token}" if token else ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status{query}", timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _page(port: int, query: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{query}", timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("app", ["jupyterlab", "marimo"])
def test_the_demo_passes_the_server_token_outside_argv(tmp_path: Path, app: str) -> None:
    port = _free_port()
    flags = ["--marimo"] if app == "marimo" else []
    proc = subprocess.Popen(
        [str(DEMO_SCRIPT), "demo", "--no-browser", "--port", str(port), *flags],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True
    ).start()
    seen: list[psutil.Process] = []
    printed: list[str] = []
    try:
        deadline = time.monotonic() + STARTUP_S
        match = None
        while match is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            printed.append(line)
            match = _URL_LINE.search(line)
        assert match is not None, "the demo never printed its URL:\n" + "".join(printed)
        token = re.split(r"(?:access_)?token=", match.group(1))[-1]
        seen = psutil.Process(proc.pid).children(recursive=True)
        port_flag = f"--port={port}" if app == "marimo" else f"--ServerApp.port={port}"
        labs = [p for p in seen if port_flag in p.cmdline()]
        assert labs, [p.cmdline() for p in seen]
        for child in [psutil.Process(proc.pid), *seen]:
            raw = Path(f"/proc/{child.pid}/cmdline").read_bytes().decode(errors="replace")
            assert token not in raw, f"the token is on the command line of {child.cmdline()}"
            assert token not in " ".join(child.environ().values())
        if app == "jupyterlab":
            assert _status(port, token) == 200  # the server has the token ...
            assert _status(port, None) == 403  # ... and wants it
        else:
            assert _page(port, f"?access_token={token}") == 200
        assert not (Path(labs[0].environ()["JUPYTER_TOKEN_FILE"])).exists()  # read, then gone
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for child in seen:
            if child.is_running():
                child.kill()
        if proc.stdout is not None:
            proc.stdout.close()
