"""A separate process for the history tests: writes, streams, holds a lock or dumps a file.

    python history_child.py write PATH WORKSPACE TURNS TOKENS   # waits for "go" on stdin
    python history_child.py stream PATH WORKSPACE TURNS RATE    # then streams until killed
    python history_child.py lock PATH                           # holds the write lock
    python history_child.py dump PATH WORKSPACE                 # prints the workspace as JSON

Every command prints one line per event, flushed, so the test can follow it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time

from chatwidget.history import History


def piece(turn: int, i: int) -> str:
    """The ``i``-th streamed piece of turn ``turn``: the test recomputes the texts."""
    return f"t{turn}p{i} "


def say(*words: object) -> None:
    print(*words, flush=True)


def write(path: str, workspace: str, turns: int, tokens: int) -> None:
    history = History.open(path, workspace)
    conv = history.create_conversation(f"from {workspace}")
    say("ready", conv.id)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    for turn in range(turns):
        history.add_user_message(conv.id, f"question {turn}")
        reply = history.begin_reply(conv.id, "demo/model")
        for i in range(tokens):
            history.append_text(reply.id, piece(turn, i))
        history.finish_reply(reply.id, status="done")
        if not history.flush(30):  # one commit per turn, so the writers' commits interleave
            raise SystemExit(f"turn {turn} was not saved: {history.warning}")
    saved = history.flush(60)
    stats = dict(history.store.stats)  # type: ignore[attr-defined]
    stats["max_commit_s"] = history.store.max_commit_s  # type: ignore[attr-defined]
    history.close()
    say("done", json.dumps({"saved": saved, "stats": stats}))


def stream(path: str, workspace: str, turns: int, rate: float) -> None:
    """``turns`` finished turns, then one reply streamed at ``rate`` pieces/s until killed."""
    history = History.open(path, workspace)
    conv = history.create_conversation("streaming")
    for turn in range(turns):
        history.add_user_message(conv.id, f"question {turn}")
        reply = history.begin_reply(conv.id, "demo/model")
        for i in range(20):
            history.append_text(reply.id, piece(turn, i))
        history.finish_reply(reply.id, status="done")
    if not history.flush(30):
        raise SystemExit("could not save the finished turns")
    history.add_user_message(conv.id, f"question {turns}")
    reply = history.begin_reply(conv.id, "demo/model")
    say("streaming", conv.id, reply.id)
    pace = threading.Event()  # the stand-in model produces ``rate`` pieces a second
    started = time.monotonic()
    i = 0
    while True:
        history.append_text(reply.id, piece(turns, i))
        say("piece", i, repr(time.monotonic()))
        i += 1
        pace.wait(max(0.0, started + i / rate - time.monotonic()))


def lock(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    say("locked")
    sys.stdin.readline()
    conn.execute("COMMIT")
    conn.close()
    say("released")


def dump(path: str, workspace: str) -> None:
    history = History.open(path, workspace)
    out = []
    for info in history.conversations():
        out.append(
            {
                "id": info.id,
                "title": info.title,
                "model": info.model,
                "messages": [m._asdict() for m in history.all_messages(info.id)],
                "active": [m.id for m in history.messages(info.id)],
            }
        )
    history.close()
    say(json.dumps({"conversations": out, "settings": history.settings()}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "write":
        write(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "stream":
        stream(args[0], args[1], int(args[2]), float(args[3]))
    elif command == "lock":
        lock(args[0])
    elif command == "dump":
        dump(args[0], args[1])
    else:
        raise SystemExit(f"unknown command {command!r}")
