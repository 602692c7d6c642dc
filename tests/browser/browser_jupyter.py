"""A throw-away Jupyter server (JupyterLab + Notebook 7) for the browser tests.

One server per test session serves both front ends: ``/lab/tree/<nb>`` is JupyterLab and
``/notebooks/<nb>`` is Notebook 7 (both server extensions load into the same server). It runs
with fresh config, data, runtime and settings folders, so nothing from the machine's own
Jupyter set-up (old kernels, layouts, the news pop-up) leaks in. Kernels inherit its
environment, which points ``huggingface_hub`` at the local hub and a temporary ``HF_HOME``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chatwidget.offline import stop_tree

log = logging.getLogger("chatwidget.tests.browser")

#: JupyterLab settings that keep pop-ups away from the page under test.
_LAB_SETTINGS: dict[str, dict[str, Any]] = {
    # The news / update check pop-up: it also fetches from outside hosts.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JupyterServer:
    """``jupyter lab`` in a child process on a free loopback port, with a token."""

    def __init__(self, base: Path, env: Mapping[str, str]) -> None:
        self.base = base
        self.root_dir = base / "notebooks"
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self._extra_env = dict(env)
        self._proc: subprocess.Popen[str] | None = None
        self._log_path = base / "jupyter.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, notebook: str, workspace: str) -> str:
        """JupyterLab opened on ``notebook`` (a path under :attr:`root_dir`).

        Each test uses its own ``workspace``: the default one would reopen the notebooks of
        earlier tests (and start their kernels) next to this one.
        """
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def notebook7_url(self, notebook: str) -> str:
        """Notebook 7 opened on ``notebook``."""
        return f"{self.url}/notebooks/{notebook}?token={self.token}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until ``/api/status`` answers."""
        settings = self.base / "lab-settings"
        for rel, value in _LAB_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value), encoding="utf-8")
        for sub in ("config", "runtime", "data", "workspaces"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.base / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            **self._extra_env,
        }
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.base / 'workspaces'}",
            # Kernels of finished tests are shut down by the tests; this is a safety net.
            "--MappingKernelManager.cull_idle_timeout=600",
        ]
        with self._log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {self._proc.returncode} before it served; "
                    f"its log:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api/status", timeout=2.0)
            except (OSError, urllib.error.URLError):
                # Not serving yet: wait a moment on the process itself, then ask again.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.2)
                continue
            return
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the server's REST API; returns the decoded JSON body (None when empty)."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode(),
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def set_theme(self, theme: str) -> None:
        """Set the user's theme (e.g. "JupyterLab Dark") for pages opened from now on."""
        raw = json.dumps({"theme": theme})
        self.api("PUT", "/lab/api/settings/@jupyterlab/apputils-extension:themes", {"raw": raw})

    def shutdown_kernels(self) -> None:
        """Shut every running kernel down (each test ends with its kernel gone)."""
        for kernel in self.api("GET", "/api/kernels"):
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30.0)
            except urllib.error.HTTPError as exc:
                log.warning("shutting kernel %s down failed: %s", kernel["id"], exc)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server and its kernels (SIGTERM to the group, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_tree(proc)
