"""History, the facade the session uses: on a real SQLite file, and in memory (history=False)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from history_helpers import poll

from chatwidget.engine.types import Usage as EngineUsage
from chatwidget.errors import UnknownConversationError
from chatwidget.history import (
    ACTIVE_KEY,
    Checkpointer,
    ComparisonResult,
    History,
    MemoryStore,
    SQLiteStore,
    Usage,
    sqlite_store,
)
from chatwidget.history.changes import Change


@pytest.fixture(params=["sqlite", "memory"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[History]:
    h = History.open(tmp_path / "h.sqlite3" if request.param == "sqlite" else False, "ws")
    yield h
    h.close()


def reopen(h: History, workspace: str = "ws") -> History:
    assert h.path is not None
    h.close()
    return History.open(h.path, workspace)


def turn(h: History, cid: str, question: str, answer: str, model: str = "org/a") -> str:
    h.add_user_message(cid, question)
    reply = h.begin_reply(cid, model)
    for word in answer.split(" "):
        h.append_text(reply.id, word + " ")
    done = h.finish_reply(reply.id, status="done")
    assert done is not None
    return done.id


def test_conversations_are_created_renamed_given_a_model_and_deleted(history: History) -> None:
    first = history.create_conversation()
    second = history.create_conversation("  Plans \n for  today ", model="org/a")
    assert first.title == "Chat 1"
    assert second.title == "Plans for today"
    assert second.model == "org/a"
    assert history.rename(first.id, "Renamed").title == "Renamed"
    assert history.set_model(first.id, "org/b").model == "org/b"
    history.delete(second.id)
    assert [c.id for c in history.conversations()] == [first.id]
    with pytest.raises(UnknownConversationError):
        history.conversation(second.id)
    with pytest.raises(ValueError, match="cannot be empty"):
        history.rename(first.id, "   ")
    assert history.rename(first.id, "x" * 500).title == "x" * 200
    third = history.create_conversation()
    assert third.title == "Chat 2"
    history.delete(third.id)
    assert history.create_conversation().title == "Chat 2"
    history.rename(first.id, "Chat 7")
    assert history.create_conversation().title == "Chat 8"  # never a title twice


def test_a_turn_keeps_the_model_and_usage_of_the_reply(history: History) -> None:
    conv = history.create_conversation(model="org/a")
    history.add_user_message(conv.id, "Hi")
    reply = history.begin_reply(conv.id, "org/a")
    assert reply.status == "streaming"
    history.append_text(reply.id, "Hel")
    history.append_text(reply.id, "lo")
    usage = EngineUsage("org/b", 12, 2, 0.05, 180.0, 0.06)
    done = history.finish_reply(reply.id, status="stopped", model="org/b", usage=usage)
    assert done is not None
    assert done.content == "Hello"
    assert (done.status, done.model) == ("stopped", "org/b")
    assert done.usage == Usage(12, 2, 0.05, 180.0, 0.06)
    assert history.chat_messages(conv.id) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    with pytest.raises(ValueError, match="not streaming"):
        history.append_text(reply.id, "more")


def test_the_final_text_replaces_what_was_streamed(history: History) -> None:
    conv = history.create_conversation()
    reply = history.begin_reply(conv.id, "org/a")
    history.append_text(reply.id, "draft")
    done = history.finish_reply(reply.id, text="final", status="error", error="boom")
    assert done is not None
    assert (done.content, done.status, done.error) == ("final", "error", "boom")
    assert history.chat_messages(conv.id) == []


def test_regenerate_edit_and_versions_through_the_history(history: History) -> None:
    conv = history.create_conversation()
    history.add_user_message(conv.id, "Q1")
    first = history.begin_reply(conv.id, "org/a")
    history.finish_reply(first.id, text="A1")
    second = history.regenerate(first.id, "org/b")
    history.finish_reply(second.id, text="A1 again")
    assert history.versions(second.id).label == "2 / 2"
    assert [m.content for m in history.messages(conv.id)] == ["Q1", "A1 again"]
    head = history.select_version(second.id, 0)
    assert head is not None
    assert head.content == "A1"
    user = history.messages(conv.id)[0]
    edited = history.edit(user.id, "Q1, better")
    assert history.messages(conv.id)[-1].id == edited.id
    third = history.begin_reply(conv.id, "org/a")
    history.finish_reply(third.id, text="A1'")
    assert [m.content for m in history.messages(conv.id)] == ["Q1, better", "A1'"]
    assert history.versions(user.id).label == "2 / 2"
    history.select_version(edited.id, 0)
    assert [m.content for m in history.messages(conv.id)] == ["Q1", "A1"]
    assert len(history.all_messages(conv.id)) == 5
    assert history.conversation(conv.id).message_count == 5
    with pytest.raises(ValueError, match="regenerate a reply instead"):
        history.edit(first.id, "no")
    user_regen = history.regenerate(user.id, "org/a")  # a reply to a user message
    assert user_regen.parent_id == user.id


def test_a_reply_to_a_deleted_conversation_is_ignored(history: History) -> None:
    conv = history.create_conversation()
    reply = history.begin_reply(conv.id, "org/a")
    history.delete(conv.id)
    assert history.append_text(reply.id, "late") is False
    assert history.finish_reply(reply.id, text="late") is None
    assert history.flush(10)


def test_settings_and_the_active_conversation(history: History) -> None:
    conv = history.create_conversation()
    history.set_settings({"temperature": 0.2, "system_prompt": "Be brief."})
    history.set_active(conv.id)
    assert history.active_conversation_id == conv.id
    assert history.settings()["temperature"] == 0.2
    assert history.settings()[ACTIVE_KEY] == conv.id
    with pytest.raises(ValueError, match="cannot be saved"):
        history.set_settings({"bad": object()})


def test_comparisons_are_saved_voted_and_deleted(history: History) -> None:
    conv = history.create_conversation()
    results = [
        ComparisonResult("org/a", "Paris.", usage=Usage(10, 2, 0.01, 200.0, 0.02)),
        ComparisonResult("org/b", "", status="error", error="out of memory"),
    ]
    saved = history.save_comparison(
        "Capital of France?", results, blind=True, conversation_id=conv.id
    )
    assert saved.models == ("org/a", "org/b")
    voted = history.set_vote(saved.id, "org/a")
    assert voted.vote == "org/a"
    assert history.comparisons() == [voted]
    history.delete_comparison(saved.id)
    assert history.comparisons() == []


# ---------------------------------------------------------------------- restore (a real file)


def test_a_new_history_on_the_file_restores_everything(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.sqlite3", "ws")
    conv = h.create_conversation("Trip", model="org/a")
    turn(h, conv.id, "Where to?", "Lisbon is nice")
    reply_id = turn(h, conv.id, "When?", "In spring")
    again = h.regenerate(reply_id, "org/b")
    h.finish_reply(again.id, text="In autumn", usage=Usage(30, 3, 0.1, 90.0, 0.2))
    h.select_version(again.id, 0)
    h.set_model(conv.id, "org/b")
    other = h.create_conversation("Other")
    h.set_settings({"max_new_tokens": 64})
    h.set_active(other.id)
    h.save_comparison("Q", [ComparisonResult("org/a", "A")], vote="org/a")
    expected_tree = h.all_messages(conv.id)
    expected_branch = h.messages(conv.id)

    h2 = reopen(h)
    assert [(c.title, c.model) for c in h2.conversations()] == [("Trip", "org/b"), ("Other", None)]
    assert h2.all_messages(conv.id) == expected_tree
    assert h2.messages(conv.id) == expected_branch  # the version shown is remembered
    assert h2.versions(again.id).label == "1 / 2"
    assert h2.message(again.id).usage == Usage(30, 3, 0.1, 90.0, 0.2)
    assert h2.settings()["max_new_tokens"] == 64
    assert h2.active_conversation_id == other.id
    assert [c.vote for c in h2.comparisons()] == ["org/a"]
    # and it goes on from there
    turn(h2, conv.id, "Why?", "Fewer people")
    h3 = reopen(h2)
    assert [m.content for m in h3.messages(conv.id)][-2:] == ["Why?", "Fewer people "]
    h3.close()


def test_a_reply_that_never_finished_reads_as_interrupted_with_its_text(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.sqlite3", "ws")
    conv = h.create_conversation()
    h.add_user_message(conv.id, "Tell me a story")
    reply = h.begin_reply(conv.id, "org/a")
    h.append_text(reply.id, "Once upon")
    h.append_text(reply.id, " a time")
    assert h.flush(10)  # scheduled checkpoints are written now
    h2 = History.open(tmp_path / "h.sqlite3", "ws")  # while h still "streams"
    restored = h2.message(reply.id)
    assert (restored.status, restored.content) == ("interrupted", "Once upon a time")
    assert h2.chat_messages(conv.id)[-1] == {"role": "assistant", "content": "Once upon a time"}
    h2.close()
    h.close()


def test_deleting_a_conversation_deletes_its_rows(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.sqlite3", "ws")
    conv = h.create_conversation()
    turn(h, conv.id, "a", "b")
    h.delete(conv.id)
    h.close()
    with sqlite3.connect(tmp_path / "h.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)


def test_workspaces_are_listed_and_other_workspaces_can_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    a = History.open(path, "notebooks/a.ipynb")
    b = History.open(path, "notebooks/b.ipynb")
    in_a = a.create_conversation("in a")
    turn(a, in_a.id, "q", "r")
    gone = a.create_conversation("deleted in a")
    b.create_conversation("in b")
    assert a.flush(10)
    assert b.flush(10)
    a.delete(gone.id)
    assert a.flush(10)
    names = {w.name: w.conversations for w in b.workspaces()}
    assert names == {"notebooks/a.ipynb": 1, "notebooks/b.ipynb": 1}
    listed = b.list_conversations("notebooks/a.ipynb")
    assert [(c.title, c.message_count) for c in listed] == [("in a", 2)]
    opened = b.open_conversation(in_a.id)
    assert opened.workspace == "notebooks/a.ipynb"
    assert [m.content for m in b.messages(in_a.id)] == ["q", "r "]
    assert in_a.id in [c.id for c in b.conversations()]
    with pytest.raises(UnknownConversationError):
        b.open_conversation("c-nope")
    a.close()
    b.close()


def test_history_false_keeps_nothing_on_disk(tmp_path: Path, history_file: Path) -> None:
    h = History.open(False, "ws")
    assert h.path is None
    assert isinstance(h.store, MemoryStore)
    turn(h, h.create_conversation().id, "a", "b")
    h.close()
    assert not history_file.exists()
    assert list(tmp_path.iterdir()) == []


def test_history_none_uses_the_default_file(history_file: Path) -> None:
    h = History.open(None, "ws")
    assert h.path == history_file
    h.create_conversation("x")
    h.close()
    assert history_file.exists()


# ---------------------------------------------------------------------- checkpoints


def test_a_streaming_reply_is_written_at_most_once_per_interval(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.sqlite3", "ws", checkpoint_interval=0.2)
    conv = h.create_conversation()
    reply = h.begin_reply(conv.id, "org/a")
    checkpointer = h._checkpointers[reply.id]
    pace = threading.Event()
    started = time.monotonic()
    pieces = 0
    while time.monotonic() - started < 1.0:  # a stand-in model at about 1,000 pieces/s
        h.append_text(reply.id, "x")
        pieces += 1
        pace.wait(0.001)
    elapsed = time.monotonic() - started
    assert pieces > 200
    assert 1 <= checkpointer.writes <= elapsed / 0.2 + 1
    h.finish_reply(reply.id)
    h.close()


def test_text_that_arrived_is_saved_within_the_interval_even_if_the_model_stalls(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.sqlite3"
    h = History.open(path, "ws", checkpoint_interval=0.3)
    conv = h.create_conversation()
    reply = h.begin_reply(conv.id, "org/a")
    h.append_text(reply.id, "only piece")  # and then nothing more arrives

    def saved() -> bool:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT content FROM messages WHERE id = ?", (reply.id,)).fetchone()
        return row == ("only piece",)

    started = time.monotonic()
    poll(saved, timeout=10, what="the checkpoint of a stalled reply")
    assert time.monotonic() - started < 0.3 + 2.0  # the interval plus generous slack
    h.close()


def test_an_empty_reply_start_waits_for_company_and_other_changes_take_it_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply's empty start can wait (up to CAN_WAIT_S) so that no disk work runs while the
    reply's prompt is built; the next change, a flush, or the wait running out commit it,
    in order, and what the user typed never waits."""
    monkeypatch.setattr(sqlite_store, "CAN_WAIT_S", 60.0)  # nothing but company ends the wait
    path = tmp_path / "h.sqlite3"
    h = History.open(path, "ws")
    conv = h.create_conversation()
    store = h.store
    assert isinstance(store, SQLiteStore)

    def rows() -> list[tuple[str, str]]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT id, status FROM messages ORDER BY created_at").fetchall()

    question = h.add_user_message(conv.id, "question")  # never waits
    poll(lambda: rows() == [(question.id, "done")], timeout=10, what="the user's message")
    poll(lambda: not store._queue, timeout=10, what="an empty queue")
    commits = store.stats["commits"]
    reply = h.begin_reply(conv.id, "org/a")  # alone in the queue: held back
    assert [c.can_wait for _, c in store._queue] == [True]
    h.rename(conv.id, "Renamed")  # cannot wait: takes the reply start along, in one commit
    poll(lambda: len(rows()) == 2, timeout=10, what="the reply start taken along")
    assert rows()[1] == (reply.id, "streaming")
    poll(lambda: not store._queue, timeout=10, what="an empty queue")
    assert store.stats["commits"] == commits + 1

    h.finish_reply(reply.id, status="done", text="answer")
    assert h.flush(10)
    second = h.begin_reply(conv.id, "org/a", parent_id=question.id)  # Regenerate
    assert h.flush(10)  # a flush does not wait for it (it would for a minute)
    assert (second.id, "streaming") in rows()
    h.finish_reply(second.id, status="done", text="again")
    assert h.flush(10)

    monkeypatch.setattr(sqlite_store, "CAN_WAIT_S", 0.2)
    started = time.monotonic()
    third = h.begin_reply(conv.id, "org/a", parent_id=question.id)
    poll(lambda: (third.id, "streaming") in rows(), timeout=10, what="the held reply start")
    assert time.monotonic() - started >= 0.2 * 0.9  # written on its own once the wait ran out
    h.close()


def test_checkpointer_schedules_one_write_per_interval_with_a_stepped_clock(
    tmp_path: Path,
) -> None:
    """Sequencing with a fake clock; the real-path tests above use a real file and clock."""
    now = [100.0]
    store = SQLiteStore(tmp_path / "h.sqlite3", start=False)  # we look at its timers
    written: list[str] = []

    def produce() -> Change | None:
        written.append("x")
        return None

    cp = Checkpointer(store, "m-1", produce, interval=1.0, clock=lambda: now[0])
    for _ in range(1000):
        cp.poke()  # one timer, due one interval after the message was created
    assert list(store._timers) == ["m-1"]
    assert store._timers["m-1"][0] == 101.0
    now[0] = 101.5
    assert store._timers.pop("m-1")[1]() is None  # the writer fires it
    cp.poke()
    assert store._timers["m-1"][0] == 102.5  # the next one an interval after the write
    cp.close()
    assert store._timers == {}
    assert written == ["x"]
    store.close()
