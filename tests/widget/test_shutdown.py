"""Kernel shutdown: a process that exits with a download running leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from chatwidget.testing.hub import LocalHub

SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    import psutil
    from chatwidget import ChatWidget
    from chatwidget.orchestrator import ModelState, StateChanged

    downloading = threading.Event()
    chat = ChatWidget(models=[sys.argv[3]], endpoint=sys.argv[1], cache_dir=sys.argv[2])
    chat.subscribe(
        lambda e: isinstance(e, StateChanged) and e.new is ModelState.DOWNLOADING
        and downloading.set()
    )
    chat.select_model(sys.argv[3])
    if not downloading.wait(60):
        sys.exit("the download did not start")
    kids = [p.pid for p in psutil.Process().children(recursive=True)]
    print(json.dumps(kids), flush=True)
    # No close(): the interpreter exits as a kernel does when it shuts down.
    """
)


def test_exit_during_a_download_stops_the_child_and_returns_promptly(
    local_hub: LocalHub, small_repo: str, tmp_path: Path
) -> None:
    local_hub.rate = 1_000_000  # ~28 s for the whole model: it is mid-download at exit
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, local_hub.url, str(tmp_path / "cache"), small_repo],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    kids = json.loads(result.stdout.strip().splitlines()[-1])
    assert kids, "a download process should have been running"
    _, alive = psutil.wait_procs([p for p in map(_process, kids) if p], timeout=10)
    assert alive == []
    assert took < 60
    assert not list((tmp_path / "cache").rglob("*.incomplete"))


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
