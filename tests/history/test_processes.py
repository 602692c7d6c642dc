"""Real processes: two writing one file at once, and a writer killed mid-reply."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from history_child import piece
from history_helpers import child, dump, expect_line, poll

TURNS = 40
TOKENS = 30


def test_two_processes_writing_one_file_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    # Two workspaces, and a third process in the first workspace too: three writers.
    procs = [child("write", path, ws, TURNS, TOKENS) for ws in ("ws-a", "ws-b", "ws-a")]
    try:
        conversation_ids = [expect_line(p, "ready").split()[1] for p in procs]
        for p in procs:  # all three are open and waiting: let them write at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = [json.loads(expect_line(p, "done").split(" ", 1)[1]) for p in procs]
        for p in procs:
            assert p.wait(60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(r["saved"] for r in reports), reports
    print("writers:", [r["stats"] for r in reports])  # commits, failures, max commit time

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        for cid in conversation_ids:
            rows = db.execute(
                "SELECT role, content, status, parent_id, id FROM messages "
                "WHERE conversation_id = ? ORDER BY seq",
                (cid,),
            ).fetchall()
            assert len(rows) == 2 * TURNS, cid
            parent = None
            for i, (role, content, status, parent_id, mid) in enumerate(rows):
                t = i // 2
                if i % 2 == 0:
                    assert (role, content) == ("user", f"question {t}")
                else:
                    expected = "".join(piece(t, k) for k in range(TOKENS))
                    assert (role, content, status) == ("assistant", expected, "done")
                assert parent_id == parent  # one unbroken chain per conversation
                parent = mid
    # Each workspace restores in a new process with everything its writers wrote.
    restored_a = dump(path, "ws-a")["conversations"]
    restored_b = dump(path, "ws-b")["conversations"]
    assert sorted(c["id"] for c in restored_a) == sorted([conversation_ids[0], conversation_ids[2]])
    assert [c["id"] for c in restored_b] == [conversation_ids[1]]
    assert all(len(c["messages"]) == 2 * TURNS for c in restored_a + restored_b)


def test_a_writer_killed_mid_reply_loses_at_most_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    finished = 3
    rate = 200.0
    proc = child("stream", path, "ws", finished, rate)
    appended_at: dict[int, float] = {}
    try:
        _, conversation_id, reply_id = expect_line(proc, "streaming").split()
        # Let it stream for more than two checkpoint intervals, then kill it outright.
        while True:
            _, n, t = expect_line(proc, "piece").split()
            appended_at[int(n)] = float(t)
            if int(n) >= 2.5 * rate:
                break
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    restored = dump(path, "ws")["conversations"]  # a brand-new process restores the file
    assert len(restored) == 1
    conv = restored[0]
    assert conv["id"] == conversation_id
    messages = {m["id"]: m for m in conv["messages"]}
    assert len(messages) == 2 * finished + 2
    for t, m in enumerate(m for m in conv["messages"] if m["role"] == "assistant"):
        if t < finished:  # the finished turns are all there
            assert m["status"] == "done"
            assert m["content"] == "".join(piece(t, k) for k in range(20))
    reply = messages[reply_id]
    assert reply["status"] == "interrupted"
    assert conv["active"][-1] == reply_id
    kept = 0
    while reply["content"].startswith("".join(piece(finished, k) for k in range(kept + 1))):
        kept += 1
    assert reply["content"] == "".join(piece(finished, k) for k in range(kept)), "a clean prefix"
    assert kept > 0, "at least one checkpoint was written"
    # Every piece lost arrived less than a second (plus scheduling slack) before the kill.
    first_lost = min(appended_at.get(kept, killed_at), killed_at)
    lost_for = killed_at - first_lost
    print(f"kept {kept} pieces, lost {len(appended_at) - kept}, the last {lost_for:.2f} s")
    assert lost_for <= 1.0 + 0.5


def test_a_reader_process_sees_a_workspace_while_another_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    writer = child("write", path, "ws", 200, 5)
    try:
        expect_line(writer, "ready")
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()

        def some_rows() -> bool:
            with sqlite3.connect(path) as db:
                return bool(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] > 20)

        poll(some_rows, timeout=60, what="the writer's first rows")
        snapshot = dump(path, "ws")["conversations"]  # while it goes on writing
        assert len(snapshot) == 1
        messages = snapshot[0]["messages"]
        assert messages
        assert all(m["parent_id"] in {None} | {x["id"] for x in messages} for m in messages)
        expect_line(writer, "done")
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
