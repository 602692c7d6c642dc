"""The SQLite schema of the history file and its migrations.

``schema_version`` holds one row per applied migration; the file's version is the largest.
:data:`MIGRATIONS` maps each version to the statements that bring a file from the version
before it; :func:`migrate` applies the missing ones in one ``BEGIN IMMEDIATE`` transaction,
so a file is at one version or the next, never in between, and two processes opening an old
file at once migrate it once.

- Version 1: conversations, messages (the tree: ``parent_id``; ``active_child`` at branch
  points, and ``root_choice`` on the conversation), settings.
- Version 2: comparisons and their per-model results (for the compare view).

To change the schema, add version N+1 here (never edit an applied step) and a test that a
version-N file migrates with its rows intact.
"""

from __future__ import annotations

import sqlite3
import time

SCHEMA_VERSION = 2

#: Columns of ``messages`` in :class:`~chatwidget.history.types.Message` field order.
MESSAGE_COLUMNS = (
    "id",
    "parent_id",
    "role",
    "content",
    "status",
    "model",
    "prompt_tokens",
    "new_tokens",
    "time_to_first_token_s",
    "tokens_per_s",
    "duration_s",
    "error",
    "created_at",
)

_V1 = (
    """CREATE TABLE schema_version (
        version INTEGER PRIMARY KEY,
        applied_at REAL NOT NULL
    )""",
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        workspace TEXT NOT NULL,
        title TEXT NOT NULL,
        model TEXT,
        root_choice TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX conversations_by_workspace ON conversations (workspace, created_at)",
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        parent_id TEXT REFERENCES messages (id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('done', 'streaming', 'stopped', 'error', 'interrupted')),
        model TEXT,
        prompt_tokens INTEGER,
        new_tokens INTEGER,
        time_to_first_token_s REAL,
        tokens_per_s REAL,
        duration_s REAL,
        error TEXT,
        created_at REAL NOT NULL,
        active_child TEXT
    )""",
    "CREATE INDEX messages_by_conversation ON messages (conversation_id, seq)",
    "CREATE INDEX messages_by_parent ON messages (parent_id)",
    # Choices are stored at branch points only, so this index stays small.
    "CREATE INDEX messages_with_choice ON messages (conversation_id) "
    "WHERE active_child IS NOT NULL",
    """CREATE TABLE settings (
        workspace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (workspace, key)
    )""",
)

_V2 = (
    """CREATE TABLE comparisons (
        id TEXT PRIMARY KEY,
        workspace TEXT NOT NULL,
        conversation_id TEXT REFERENCES conversations (id) ON DELETE SET NULL,
        prompt TEXT NOT NULL,
        blind INTEGER NOT NULL,
        vote TEXT,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX comparisons_by_workspace ON comparisons (workspace, created_at)",
    "CREATE INDEX comparisons_by_conversation ON comparisons (conversation_id)",
    """CREATE TABLE comparison_results (
        comparison_id TEXT NOT NULL REFERENCES comparisons (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        model TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        prompt_tokens INTEGER,
        new_tokens INTEGER,
        time_to_first_token_s REAL,
        tokens_per_s REAL,
        duration_s REAL,
        error TEXT,
        PRIMARY KEY (comparison_id, position)
    )""",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {1: _V1, 2: _V2}


class ForeignDatabaseError(sqlite3.DatabaseError):
    """The file is an SQLite database with tables of its own but no ``schema_version``."""


def file_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open file: 0 for an empty database.

    Raises :class:`ForeignDatabaseError` for a database that is not a chatwidget history.
    """
    names = {
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith("sqlite_")
    }
    if "schema_version" in names:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)
    if names:
        raise ForeignDatabaseError(
            f"it has tables ({', '.join(sorted(names)[:5])}) but no schema_version table"
        )
    return 0


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Bring the file to ``target`` in one transaction; returns ``(from, to)`` versions.

    Reads the version without a write lock first, so a file that is current costs no lock.
    A file newer than ``target`` is left alone (``from > to``): the caller must not write it.
    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    version = file_version(conn)
    if version >= target:
        return version, target
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = file_version(conn)  # another process may have migrated meanwhile
        for step in range(version + 1, target + 1):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (step, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version, target
