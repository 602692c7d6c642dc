"""Helpers shared by the benchmarks: work folders, timing, tables and JSON results.

Benchmarks compare against a baseline measured in the same run and report ratios, never
absolute timings alone. Import from a script in ``bench/`` as ``from _common import ...``
(the script's folder is on ``sys.path``).

- :func:`work_dir`: where big inputs are built and cached (``$CHATWIDGET_BENCH_DIR`` or
  ``~/.cache/chatwidget``).
- :func:`fresh_dir`: an empty scratch folder, removed afterwards (e.g. a fresh HF cache).
- :func:`time_call`: seconds one call takes.
- :func:`rotating`: the order of methods for round ``n``, so no method always runs first.
- :func:`summarize`: min/median/max of a list of timings.
- :func:`print_table`: an aligned text table.
- :func:`write_results`: ``bench/results/<name>-<time>.json`` with machine details.
- ``run_hub_process``: the local hub in its own process (re-exported from chatwidget.testing).

Importing it points ``CHATWIDGET_HISTORY`` at a scratch file of this process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chatwidget.testing.hub import run_hub_process

__all__ = [
    "RESULTS_DIR",
    "fresh_dir",
    "machine",
    "print_table",
    "rotating",
    "run_hub_process",
    "summarize",
    "time_call",
    "work_dir",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Widgets made by a benchmark save their conversations in a scratch file, never in the user's
# own history (``ChatWidget(history=...)`` defaults to ``$CHATWIDGET_HISTORY``). One file per
# process, always: run_all.py's benchmarks would otherwise inherit one file, and a widget of
# one benchmark would restore another's conversations (models on a hub that is gone, 2,000
# seeded messages) and measure those.
_HISTORY_DIR = tempfile.mkdtemp(prefix="chatwidget-bench-history-")
atexit.register(shutil.rmtree, _HISTORY_DIR, ignore_errors=True)
os.environ["CHATWIDGET_HISTORY"] = str(Path(_HISTORY_DIR) / "history.sqlite3")


def work_dir() -> Path:
    """The folder for cached benchmark inputs; created if missing."""
    env = os.environ.get("CHATWIDGET_BENCH_DIR")
    folder = Path(env) if env else Path.home() / ".cache" / "chatwidget"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def fresh_dir(parent: Path | None = None, prefix: str = "bench-") -> Iterator[Path]:
    """Yield a new empty folder (under ``parent`` if given) and delete it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def time_call(fn: Callable[[], object]) -> float:
    """Seconds (``perf_counter``) that one call of ``fn`` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@functools.cache
def _worker() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-plain")


def in_worker_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on one long-lived worker thread and return its result: the baseline runs
    ``generate`` as the session's reply thread does. (A fresh thread per call is not the
    same: each starts its own OpenMP team, and how long libgomp lets idle team threads spin
    depends on how many teams are alive, which made a plain run's speed and CPU time swing
    against the widget's on this machine.)"""
    return _worker().submit(fn).result()


def rotating(names: Sequence[str], round_no: int) -> list[str]:
    """``names`` rotated by ``round_no``: each method takes its turn at running first."""
    k = round_no % len(names)
    return [*names[k:], *names[:k]]


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """``min``, ``median`` and ``max`` of the samples."""
    return {
        "min": min(samples),
        "median": statistics.median(samples),
        "max": max(samples),
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under headers, columns aligned; floats with three decimals."""

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def machine() -> dict[str, Any]:
    """Where the numbers were taken: platform, CPU count, Python, load average."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus ``bench`` and ``machine``) to ``bench/results/``; return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"bench": name, "machine": machine(), **payload}, indent=2) + "\n")
    return out
