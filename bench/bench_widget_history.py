"""The history through the widget: opening a widget on a big file, and SIGKILLed kernels.

    .venv/bin/python bench/bench_widget_history.py [--rounds N] [--kills N] [--turns N]

Ratios against baselines measured in the same run:

- **widget restore**: ``ChatWidget(history=PATH)`` on a file of 10,000 messages in 100
  conversations (the session restores every conversation, the publisher renders the
  conversation list and the active conversation's last page) / reading the same rows with
  plain ``sqlite3`` (connect, ``SELECT`` conversations, messages and settings, ``fetchall``).
  The runtime (orchestrator, downloader) is already up, as in a kernel where a widget ran
  before, so the figure is the history's cost. Goal ≤ 2.
- **durability**: a kernel process chats ``--turns`` turns with a real tiny model through a
  ``ChatWidget`` and is SIGKILLed at a random moment, ``--kills`` times (20 by default).
  Counted: runs where anything but the turn in flight was lost, or more than 1 s (plus a
  commit) of the text streamed into it. A turn counts as finished once the kernel has
  printed it after ``chat.history.flush()``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import fresh_dir, print_table, rotating, time_call, write_results
from bench_history import CONVERSATIONS, PER_CONVERSATION, WORKSPACE, build_store, plain_read

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def open_widget(path: Path) -> Any:
    from chatwidget import ChatWidget

    return ChatWidget(models=[], history=path, workspace=WORKSPACE)


def bench_restore(path: Path, rounds: int) -> dict[str, Any]:
    from chatwidget import ChatWidget

    keeper = ChatWidget(models=[], history=False)  # the runtime stays up between rounds
    # No model to ask for again: restore measures the history, not a model load.
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE conversations SET model = NULL")
    chat = open_widget(path)
    count = sum(info.count for info in chat.session.conversations())
    assert len(chat.session.conversations()) == CONVERSATIONS, chat.session.conversations()
    assert count == CONVERSATIONS * PER_CONVERSATION, count
    chat.close()
    times: dict[str, list[float]] = {"widget": [], "plain": []}
    for r in range(rounds):
        for name in rotating(["widget", "plain"], r):
            if name == "plain":
                times["plain"].append(time_call(lambda: plain_read(path)))
            else:
                started = time.perf_counter()
                chat = open_widget(path)
                times["widget"].append(time.perf_counter() - started)
                assert len(chat.transcript["messages"]) > 0
                chat.close()
    keeper.close()
    widget, plain = statistics.median(times["widget"]), statistics.median(times["plain"])
    return {"widget_ms": widget * 1e3, "plain_ms": plain * 1e3, "ratio": widget / plain}


# --------------------------------------------------------------------- durability


def kernel_child(endpoint: str, cache: str, path: str, turns: int) -> None:
    """Chat ``turns`` turns; print progress of the streaming reply every 20 ms and each
    finished turn (after it is saved)."""
    from chatwidget import ChatWidget
    from chatwidget.testing.models import DEMO_TINY_REPO

    chat = ChatWidget(models=[DEMO_TINY_REPO], endpoint=endpoint, cache_dir=cache, history=path)
    chat.select_model(DEMO_TINY_REPO)
    if not chat.wait_until_idle(300):
        raise SystemExit("the model did not load")
    chat.set_settings(max_new_tokens=48)
    deltas = chat.session.deltas
    current: dict[str, str] = {}
    lock = threading.Lock()

    def report() -> None:  # the monitor: what the reply holds, with the time
        while True:
            with lock:
                mid = current.get("id")
            text = deltas.text(mid) if mid else None
            if text is not None:
                print(json.dumps({"p": len(text), "t": time.time()}), flush=True)
            time.sleep(0.02)  # a sampling period, not a wait for a condition

    threading.Thread(target=report, daemon=True).start()
    print(json.dumps({"started": time.time()}), flush=True)
    for t in range(turns):
        handle = chat.send(f"Turn {t}: tell me something")
        with lock:
            current["id"] = handle.message_id
        text = handle.wait(120)
        with lock:
            current.pop("id", None)
        saved = chat.history.flush(5)
        print(json.dumps({"done": t, "chars": len(text), "saved": saved}), flush=True)
    print(json.dumps({"end": True}), flush=True)
    threading.Event().wait()  # stay up until killed


def durability(folder: Path, kills: int, turns: int) -> dict[str, Any]:
    from chatwidget.history import History
    from chatwidget.testing.hub import LocalHub
    from chatwidget.testing.models import build_demo_hub

    hub_root = folder / "hub"
    build_demo_hub(hub_root, include_small=False)
    rng = random.Random(10)
    failures, worst, finished, in_reply = 0, 0.0, [], 0
    with LocalHub(hub_root) as hub:
        cache = folder / "cache"
        for k in range(kills):
            path = folder / f"kill{k}.sqlite3"
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
            proc = subprocess.Popen(
                [sys.executable, __file__, "--kernel", hub.url, str(cache), str(path), str(turns)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert proc.stdout is not None
            progress: list[tuple[float, int]] = []
            done: list[dict[str, Any]] = []
            started = None
            kill_after = None
            while True:
                line = proc.stdout.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "started" in msg:
                    started = time.monotonic()
                    # a random moment of the turns, from a first run's pace (~60 ms a turn)
                    kill_after = rng.uniform(0.05, turns * 0.06)
                elif "p" in msg:
                    progress.append((msg["t"], msg["p"]))
                elif "done" in msg:
                    done.append(msg)
                    progress.clear()
                elif "end" in msg:
                    break
                if (
                    started is not None
                    and kill_after is not None
                    and time.monotonic() - started >= kill_after
                ):
                    break
            killed_at = time.time()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            h = History.open(path)
            convs = h.conversations()
            good = len(convs) == 1
            messages = h.messages(convs[0].id) if convs else []
            h.close()
            replies = [m for m in messages if m.role == "assistant"]
            good &= len(replies) >= len(done)
            for t, m in enumerate(replies):
                if t < len(done):  # finished before the kill: kept whole
                    good &= m.status == "done" and len(m.content) == done[t]["chars"]
                    continue
                in_reply += 1  # the turn in flight: what was lost came in the last second
                kept = len(m.content)
                reached = [at for at, chars in progress if chars > kept]
                lost_from = reached[0] if reached else killed_at
                loss = max(0.0, killed_at - lost_from)
                worst = max(worst, loss)
                good &= m.status == "interrupted" and loss <= 1.25
            failures += not good
            finished.append(len(done))
    return {
        "runs": kills,
        "runs_losing_more_than_the_turn_in_flight": failures,
        "worst_loss_in_flight_s": worst,
        "kills_inside_a_reply": in_reply,
        "turns_finished_before_kill": finished,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--kernel":
        kernel_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds per timing")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILL runs for durability")
    parser.add_argument("--turns", type=int, default=100, help="turns per kernel")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    with fresh_dir(prefix="bench-widget-history-") as folder:
        os.environ["HF_HOME"] = str(folder / "hf-home")
        os.environ["HF_HUB_OFFLINE"] = "1"
        path = folder / "restore.sqlite3"
        build_store(path)
        restore = bench_restore(path, args.rounds)
        del os.environ["HF_HUB_OFFLINE"]
        kills = durability(folder, args.kills, args.turns)

    rows = [
        [
            "widget restore 10,000 messages / plain sqlite3 read",
            restore["ratio"],
            f"{restore['plain_ms']:.1f} ms -> {restore['widget_ms']:.1f} ms",
        ],
        [
            "widget SIGKILL runs losing more than the turn in flight",
            float(kills["runs_losing_more_than_the_turn_in_flight"]),
            f"of {kills['runs']} ({kills['kills_inside_a_reply']} inside a reply); "
            f"worst in-flight loss {kills['worst_loss_in_flight_s']:.2f} s",
        ],
    ]
    print_table(["ratio", "value", "measured"], rows)
    results = {"restore": restore, "durability": kills, "ratios": {r[0]: r[1] for r in rows}}
    print("wrote", write_results("bench_widget_history", results))


if __name__ == "__main__":
    main()
