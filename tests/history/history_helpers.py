"""Helpers of the history tests: polling with a deadline, child processes, small RAM disks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

CHILD = Path(__file__).with_name("history_child.py")
T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float = 20.0, what: str = "the condition") -> T:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)


def child(*args: object) -> subprocess.Popen[str]:
    """Start ``history_child.py`` with these arguments; stdin and stdout are text pipes."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def expect_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """The child's next line, which must start with ``prefix`` (blocks until it comes)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(prefix), f"expected {prefix!r} from the child, got {line!r}"
    return line.strip()


def dump(path: Path, workspace: str) -> dict[str, Any]:
    """The workspace as a brand-new process restores it."""
    out = subprocess.run(
        [sys.executable, str(CHILD), "dump", str(path), workspace],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small RAM disk at ``path`` (needs root, as in this project's sandbox and CI)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, mode: str) -> None:
    """Remount a tmpfs read-only (``"ro"``) or read-write (``"rw"``)."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)
