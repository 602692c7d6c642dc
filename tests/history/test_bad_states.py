"""Bad states of the history file: locked, read-only, full disk, corrupt, newer, foreign.

In each, the chat goes on in memory, a warning says what is wrong, nothing already saved is
lost, and pending changes are saved once the file can be written again. Read-only and
full-disk files live on small RAM disks (tmpfs), because CI runs as root and chmod does not
stop root from writing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from history_helpers import child, dump, expect_line, poll, remount, tmpfs

from chatwidget.history import History, StoreWarning

FAST_RETRY: dict[str, Any] = {"retry_min": 0.05, "retry_max": 0.2}


def turn(h: History, cid: str, question: str, answer: str) -> None:
    h.add_user_message(cid, question)
    reply = h.begin_reply(cid, "org/a")
    h.append_text(reply.id, answer)
    h.finish_reply(reply.id)


def contents(h: History, cid: str) -> list[str]:
    return [m.content for m in h.messages(cid)]


def restored_contents(path: Path, workspace: str = "ws") -> list[list[str]]:
    """The active branches as a new process restores them."""
    conversations = dump(path, workspace)["conversations"]
    out = []
    for c in conversations:
        by_id = {m["id"]: m for m in c["messages"]}
        out.append([by_id[mid]["content"] for mid in c["active"]])
    return out


def test_a_locked_file_warns_keeps_the_chat_in_memory_and_saves_when_free(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    changes: list[StoreWarning | None] = []
    h = History.open(
        path, "ws", busy_timeout=0.2, on_status=lambda: changes.append(h.warning), **FAST_RETRY
    )
    conv = h.create_conversation("before the lock")
    turn(h, conv.id, "saved", "already")
    assert h.flush(10)

    locker = child("lock", path)  # another process holds the write lock
    try:
        expect_line(locker, "locked")
        turn(h, conv.id, "during", "the lock")
        h.rename(conv.id, "renamed while locked")
        warning = poll(lambda: h.warning, what="the locked warning")
        assert warning.kind == "locked"
        assert "locked by another program" in warning.message
        assert str(path) in warning.message
        assert warning.pending_writes >= 1
        assert warning.as_failure().retryable
        assert contents(h, conv.id) == ["saved", "already", "during", "the lock"]
        assert h.conversation(conv.id).title == "renamed while locked"
        # What was saved is still there, and a new process can restore it meanwhile.
        assert restored_contents(path) == [["saved", "already"]]
        assert not h.flush(2)  # returns at once: it does not wait on a locked file
    finally:
        assert locker.stdin is not None
        locker.stdin.write("release\n")
        locker.stdin.flush()
        expect_line(locker, "released")
        locker.wait(30)
    poll(lambda: h.warning is None, what="the retry after the lock was released")
    assert h.flush(10)
    assert changes[0] is not None
    assert changes[0].kind == "locked"
    assert changes[-1] is None  # the listener heard that it works again
    h.close()
    assert restored_contents(path) == [["saved", "already", "during", "the lock"]]
    assert dump(path, "ws")["conversations"][0]["title"] == "renamed while locked"


def test_close_makes_one_last_attempt_to_save_what_waits(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    h = History.open(path, "ws", busy_timeout=0.2, retry_min=60.0, retry_max=60.0)
    conv = h.create_conversation("kept")
    assert h.flush(10)
    locker = child("lock", path)
    expect_line(locker, "locked")
    turn(h, conv.id, "written", "at close")
    poll(lambda: h.warning, what="the locked warning")
    assert locker.stdin is not None
    locker.stdin.write("release\n")
    locker.stdin.flush()
    expect_line(locker, "released")
    locker.wait(30)
    h.close()  # the next retry is a minute away: close tries at once
    assert restored_contents(path) == [["written", "at close"]]


def test_a_read_only_file_is_restored_and_changes_wait_until_it_can_be_written(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        path = disk / "h.sqlite3"
        h = History.open(path, "ws")
        conv = h.create_conversation("on a disk that turns read-only")
        turn(h, conv.id, "saved", "before")
        h.close()
        remount(disk, "ro")
        try:
            h2 = History.open(path, "ws", **FAST_RETRY)
            warning = h2.warning
            assert warning is not None
            assert warning.kind == "read_only"
            assert "cannot be written" in warning.message
            assert contents(h2, conv.id) == ["saved", "before"]  # restored all the same
            turn(h2, conv.id, "while", "read-only")
            assert not h2.flush(1)
            assert contents(h2, conv.id) == ["saved", "before", "while", "read-only"]
            assert path.stat().st_size > 0
        finally:
            remount(disk, "rw")
        h2.retry_now()
        poll(lambda: h2.warning is None, what="the retry once the disk was writable")
        assert h2.flush(10)
        h2.close()
        assert restored_contents(path) == [["saved", "before", "while", "read-only"]]


def test_a_full_disk_warns_and_the_changes_are_saved_when_space_is_freed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        path = disk / "h.sqlite3"
        h = History.open(path, "ws", **FAST_RETRY)
        conv = h.create_conversation("on a small disk")
        turn(h, conv.id, "saved", "before")
        assert h.flush(10)
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:  # fill the disk up
            while True:
                fh.write(b"\0" * 65536)
        big = "x" * 40_000

        def keep_chatting() -> StoreWarning | None:
            h.add_user_message(conv.id, big)
            return h.warning

        warning = poll(keep_chatting, what="the disk-full warning")
        assert warning.kind == "disk_full"
        assert "is full" in warning.message
        in_memory = contents(h, conv.id)
        assert in_memory[:2] == ["saved", "before"]
        filler.unlink()
        h.retry_now()
        poll(lambda: h.warning is None, what="the retry once space was freed")
        assert h.flush(10)
        h.close()
        assert restored_contents(path) == [in_memory]


def test_a_file_that_is_not_a_database_is_moved_aside_and_a_new_one_started(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.sqlite3"
    garbage = b"this is not a database\n" * 300
    path.write_bytes(garbage)
    h = History.open(path, "ws")
    assert h.warning is None
    [notice] = h.notices
    assert notice.kind == "corrupt"
    assert notice.moved_to is not None
    moved = Path(notice.moved_to)
    assert moved.read_bytes() == garbage  # kept, byte for byte
    assert moved.parent == path.parent
    assert notice.moved_to in notice.message
    conv = h.create_conversation("fresh start")
    turn(h, conv.id, "new", "file")
    h.close()
    assert restored_contents(path) == [["new", "file"]]


def test_a_file_with_damaged_pages_is_moved_aside_on_restore(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    h = History.open(path, "ws")
    conv = h.create_conversation()
    for i in range(150):
        turn(h, conv.id, f"q{i} " + "y" * 500, f"a{i} " + "z" * 500)
    h.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    data[page : len(data) - page] = b"\xa5" * (len(data) - 2 * page)  # every page but 1st/last
    path.write_bytes(bytes(data))

    h2 = History.open(path, "ws")
    kinds = [n.kind for n in h2.notices]
    assert kinds == ["corrupt"], h2.notices
    assert h2.conversations() == []
    moved = h2.notices[0].moved_to
    assert moved is not None
    assert Path(moved).read_bytes() == bytes(data)
    turn(h2, h2.create_conversation().id, "works", "again")
    h2.close()
    assert restored_contents(path) == [["works", "again"]]


def test_a_file_damaged_while_open_is_rewritten_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    h = History.open(path, "ws")
    conv = h.create_conversation("kept in memory")
    turn(h, conv.id, "before", "damage")
    assert h.flush(10)
    with contextlib.closing(sqlite3.connect(path)) as db:  # everything into the main file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path.write_bytes(b"\0garbage" * 1000)
    store: Any = h.store
    with store._db_lock:  # as when the store next opens the file (e.g. after a retry)
        store._conn.close()
        store._conn = None
    turn(h, conv.id, "after", "damage")
    poll(lambda: [n for n in h.notices if n.kind == "corrupt"], what="the corrupt notice")
    assert h.flush(10)
    assert h.warning is None
    h.close()
    assert restored_contents(path) == [["before", "damage", "after", "damage"]]


def test_a_file_from_a_newer_chatwidget_is_read_but_never_written(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    h = History.open(path, "ws")
    conv = h.create_conversation("old")
    turn(h, conv.id, "q", "a")
    h.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")

    h2 = History.open(path, "ws")
    warning = h2.warning
    assert warning is not None
    assert warning.kind == "newer_schema"
    assert "newer chatwidget" in warning.message
    assert [n.kind for n in h2.notices] == ["newer_schema"]
    assert contents(h2, conv.id) == ["q", "a"]
    turn(h2, conv.id, "only", "in memory")
    assert not h2.flush(1)
    h2.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (2,)


def test_an_sqlite_file_of_another_program_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    before = path.read_bytes()
    h = History.open(path, "ws")
    warning = h.warning
    assert warning is not None
    assert warning.kind == "foreign"
    assert "not a chatwidget history file" in warning.message
    conv = h.create_conversation()
    turn(h, conv.id, "kept", "in memory")
    assert contents(h, conv.id) == ["kept", "in memory"]
    h.close()
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", ["locked", "read_only", "disk_full", "corrupt"])
def test_every_warning_reads_as_a_failure_value(kind: str) -> None:
    warning = StoreWarning(kind=kind, message="m", path="p")  # type: ignore[arg-type]
    failure = warning.as_failure()
    assert failure.kind == f"history_{kind}"
    assert failure.message == "m"
    assert failure.retryable is (kind != "corrupt")
