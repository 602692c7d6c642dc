"""``chatwidget demo``: the one-command demo.

Offline by default: it builds tiny demo models, serves them from the bundled local hub
(rate-limited so downloads are visible), and opens JupyterLab on the quickstart notebook
with ``CHATWIDGET_OFFLINE=1``. ``--hub`` uses the real Hugging Face Hub instead, and
``--marimo`` opens marimo on ``marimo_quickstart.py`` instead of JupyterLab.
Ctrl+C stops JupyterLab, its kernels and the hub, and leaves no process behind.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from chatwidget.offline import DEFAULT_RATE, demo_cache_root, stop_tree

log = logging.getLogger("chatwidget.demo")


def notebooks_dir() -> Path:
    """The demo notebooks: packaged in the wheel, or the checkout's ``notebooks/``."""
    packaged = Path(__file__).parent / "notebooks"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "notebooks"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chatwidget-demo-"))
    children: list[subprocess.Popen[str]] = []
    env = dict(os.environ)
    # The children's temporary files (the kernel's throwaway HF cache, torch's compile cache)
    # go under the workdir: a kernel stopped by a signal runs no atexit clean-up, and the
    # workdir is removed on the way out.
    (workdir / "tmp").mkdir()
    env["TMPDIR"] = str(workdir / "tmp")
    stack = contextlib.ExitStack()
    try:
        shutil.copytree(
            notebooks_dir(),
            workdir / "notebooks",
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__marimo__", "*.cfg"),
        )
        if not args.hub:
            from chatwidget.testing.hub import run_hub_process
            from chatwidget.testing.models import build_demo_hub

            root = demo_cache_root()
            print(f"Building demo models in {root} (first run only) ...", flush=True)
            build_demo_hub(root)
            url = stack.enter_context(run_hub_process(root, rate=args.rate or None))
            print(f"Local hub: {url} (rate limit {args.rate} B/s)", flush=True)
            env.update(
                HF_ENDPOINT=url,
                CHATWIDGET_OFFLINE="1",
                CHATWIDGET_HUB_URL=url,
                HF_HOME=str(workdir / "hf-home"),  # keep demo models out of your real cache
                HF_HUB_DISABLE_TELEMETRY="1",
            )
        port = args.port or _free_port()
        token = secrets.token_hex(16)
        if args.marimo:
            cmd, url = _marimo_command(workdir / "notebooks", port, token, args.no_browser)
            app = "marimo"
        else:
            cmd, url = _lab_command(workdir / "notebooks", port, token, args.no_browser)
            app = "JupyterLab"
        lab = subprocess.Popen(
            cmd,
            env=env,
            text=True,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(lab)
        if not _wait_for_server(port, token, lab, timeout=120, marimo=args.marimo):
            print(
                f"{app} did not start on port {port}: is the port free? Pick another with --port.",
                file=sys.stderr,
            )
            return 1
        print(f"\n{app} is running: {url}\nPress Ctrl+C to stop.", flush=True)
        while lab.poll() is None:
            try:
                lab.wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
        return int(lab.returncode or 0)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    finally:
        for child in reversed(children):
            stop_tree(child)
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _lab_command(notebooks: Path, port: int, token: str, no_browser: bool) -> tuple[list[str], str]:
    """JupyterLab on the quickstart notebook; returns the command and the URL to open."""
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        f"--ServerApp.root_dir={notebooks}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        # A busy port must fail, not move to the next one: the URL printed uses it.
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--LabApp.default_url=/lab/tree/quickstart.ipynb",
    ]
    if no_browser:
        cmd.append("--no-browser")
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd, f"http://127.0.0.1:{port}/lab/tree/quickstart.ipynb?token={token}"


#: marimo reads ``[tool.marimo]`` from the nearest pyproject.toml: run the cells on open,
#: as the Jupyter quickstart does with Run All.
_MARIMO_PROJECT = "[tool.marimo.runtime]\nauto_instantiate = true\n"


def _marimo_command(
    notebooks: Path, port: int, token: str, no_browser: bool
) -> tuple[list[str], str]:
    """``marimo edit`` on the marimo quickstart; returns the command and the URL to open."""
    (notebooks / "pyproject.toml").write_text(_MARIMO_PROJECT, encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "marimo",
        "edit",
        str(notebooks / "marimo_quickstart.py"),
        "--host=127.0.0.1",
        f"--port={port}",
        f"--token-password={token}",
        "--no-sandbox",
        "--skip-update-check",
    ]
    if no_browser:
        cmd.append("--headless")
    return cmd, f"http://127.0.0.1:{port}/?access_token={token}"


def _wait_for_server(
    port: int, token: str, proc: subprocess.Popen[str], timeout: float, marimo: bool = False
) -> bool:
    import urllib.request

    path = "/health" if marimo else f"/api/status?token={token}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatwidget", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="open JupyterLab on the quickstart notebook")
    demo.add_argument("--hub", action="store_true", help="use the real Hugging Face Hub")
    demo.add_argument(
        "--marimo", action="store_true", help="open marimo on marimo_quickstart.py instead"
    )
    demo.add_argument("--port", type=int, default=0, help="server port (default: free)")
    demo.add_argument(
        "--rate", type=int, default=DEFAULT_RATE, help="local hub rate limit in bytes/s (0: none)"
    )
    demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SIGTERM is handled like Ctrl+C so the children are always cleaned up; SIGINT is set
    # too, as a process started in the background of a script inherits it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
