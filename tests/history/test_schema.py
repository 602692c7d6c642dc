"""The schema version table and migrations: an older file migrates with its rows intact."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from history_helpers import dump

from chatwidget.history import ComparisonResult, History
from chatwidget.history.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ForeignDatabaseError,
    file_version,
    migrate,
)


def make_version_1_file(path: Path) -> None:
    """A history file as chatwidget with schema version 1 wrote it: one conversation."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        for statement in MIGRATIONS[1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (1, 0)")
        db.execute(
            "INSERT INTO conversations VALUES ('c-1', 'ws', 'Old chat', 'org/a', 'm-1', 1.0, 2.0)"
        )
        db.execute(
            "INSERT INTO messages (id, conversation_id, parent_id, role, content, status, "
            "created_at, active_child) VALUES ('m-1', 'c-1', NULL, 'user', 'hi', 'done', 1.0, "
            "'m-2')"
        )
        db.execute(
            "INSERT INTO messages (id, conversation_id, parent_id, role, content, status, model, "
            "new_tokens, tokens_per_s, created_at) VALUES ('m-2', 'c-1', 'm-1', 'assistant', "
            "'hello', 'done', 'org/a', 2, 50.0, 1.5)"
        )
        db.execute("INSERT INTO settings VALUES ('ws', 'temperature', '0.5')")
        db.execute("COMMIT")


def test_a_version_1_file_migrates_to_the_current_schema_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    make_version_1_file(path)
    h = History.open(path, "ws")
    assert h.warning is None
    assert [(c.title, c.model) for c in h.conversations()] == [("Old chat", "org/a")]
    reply = h.message("m-2")
    assert (reply.content, reply.model, reply.new_tokens, reply.tokens_per_s) == (
        "hello",
        "org/a",
        2,
        50.0,
    )
    assert h.settings() == {"temperature": 0.5}
    # The table version 2 added works at once.
    h.save_comparison("which?", [ComparisonResult("org/a", "x"), ComparisonResult("org/b", "y")])
    h.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert db.execute("SELECT COUNT(*) FROM comparison_results").fetchone() == (2,)
    restored = dump(path, "ws")["conversations"]
    assert [m["content"] for m in restored[0]["messages"]] == ["hi", "hello"]
    h2 = History.open(path, "ws")
    assert [c.prompt for c in h2.comparisons()] == ["which?"]
    h2.close()


def test_migrate_applies_each_missing_step_once(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db", isolation_level=None)) as db:
        assert file_version(db) == 0
        assert migrate(db, target=1) == (0, 1)
        assert file_version(db) == 1
        assert migrate(db) == (1, SCHEMA_VERSION)
        assert migrate(db) == (SCHEMA_VERSION, SCHEMA_VERSION)
        rows = db.execute("SELECT COUNT(*) FROM schema_version").fetchone()
        assert rows == (SCHEMA_VERSION,)


def test_a_failed_migration_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    make_version_1_file(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE comparisons (x)")  # in the way of step 2
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            migrate(db)
        assert file_version(db) == 1
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (2,)


def test_a_database_of_another_program_is_not_a_version(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db", isolation_level=None)) as db:
        db.execute("CREATE TABLE t (x)")
        with pytest.raises(ForeignDatabaseError, match="no schema_version"):
            file_version(db)
