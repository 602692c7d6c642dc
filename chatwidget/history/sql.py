"""The SQL of the history file: reading a workspace, and applying each change operation.

Plain functions over an open ``sqlite3`` connection, used by
:class:`~chatwidget.history.sqlite_store.SQLiteStore` (which owns connections, threads and
failures). Reads select exactly :class:`~chatwidget.history.types.Message`'s columns, in
index order, so a restore builds each message with ``Message._make(row)`` and sorts nothing.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from chatwidget.history.changes import (
    ConversationRecord,
    ConversationRow,
    CreateConversation,
    DeleteComparison,
    DeleteConversation,
    PutComparison,
    PutMessage,
    PutSettings,
    SetChoice,
    SetVote,
    UpdateConversation,
    UpdateText,
    WorkspaceData,
)
from chatwidget.history.schema import MESSAGE_COLUMNS
from chatwidget.history.types import Comparison, ComparisonResult, Message, Usage, WorkspaceInfo

SELECT_MESSAGES = (
    f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages WHERE conversation_id = ? ORDER BY seq"
)
CONVERSATION_COLUMNS = "id, workspace, title, model, root_choice, created_at, updated_at"
PUT_MESSAGE = (
    f"INSERT INTO messages (conversation_id, {', '.join(MESSAGE_COLUMNS)}) "
    f"VALUES (?, {', '.join('?' for _ in MESSAGE_COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in MESSAGE_COLUMNS[2:])
)
PUT_CONVERSATION = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET title = excluded.title, model = excluded.model, "
    "root_choice = excluded.root_choice, updated_at = excluded.updated_at"
)


def read_workspace(conn: sqlite3.Connection, version: int, workspace: str) -> WorkspaceData:
    """Everything a workspace holds, in one read transaction."""
    conn.execute("BEGIN")  # one snapshot for every read below
    rows = conn.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace = ? "
        "ORDER BY created_at, rowid",
        (workspace,),
    ).fetchall()
    choices: dict[str, dict[str, str]] = {}
    for cid, mid, child in conn.execute(
        "SELECT m.conversation_id, m.id, m.active_child FROM conversations c "
        "JOIN messages m ON m.conversation_id = c.id "
        "WHERE c.workspace = ? AND m.active_child IS NOT NULL",
        (workspace,),
    ):
        choices.setdefault(cid, {})[mid] = child
    records = [
        ConversationRecord(
            ConversationRow._make(row),
            messages_of(conn, row[0]),
            choices.get(row[0], {}),
        )
        for row in rows
    ]
    settings = conn.execute(
        "SELECT key, value FROM settings WHERE workspace = ?", (workspace,)
    ).fetchall()
    comparisons = read_comparisons(conn, version, "workspace = ?", (workspace,))
    conn.execute("COMMIT")
    return WorkspaceData(records, {k: json.loads(v) for k, v in settings}, comparisons)


def read_conversation(conn: sqlite3.Connection, conversation_id: str) -> ConversationRecord | None:
    """One conversation of any workspace, or None."""
    conn.execute("BEGIN")
    row = conn.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?",
        (conversation_id,),
    ).fetchone()
    if row is None:
        conn.execute("COMMIT")
        return None
    choices = dict(
        conn.execute(
            "SELECT id, active_child FROM messages "
            "WHERE conversation_id = ? AND active_child IS NOT NULL",
            (conversation_id,),
        ).fetchall()
    )
    record = ConversationRecord(
        ConversationRow._make(row), messages_of(conn, conversation_id), choices
    )
    conn.execute("COMMIT")
    return record


def read_workspaces(conn: sqlite3.Connection) -> list[WorkspaceInfo]:
    """Every workspace with its conversation count, most recently changed first."""
    rows = conn.execute(
        "SELECT workspace, COUNT(*), MAX(updated_at) FROM conversations "
        "GROUP BY workspace ORDER BY MAX(updated_at) DESC"
    ).fetchall()
    return [WorkspaceInfo(name, n, t) for name, n, t in rows]


def read_conversations(
    conn: sqlite3.Connection, workspace: str
) -> list[tuple[ConversationRow, int]]:
    """A workspace's conversations with their message counts, oldest first."""
    rows = conn.execute(
        "SELECT c.id, c.workspace, c.title, c.model, c.root_choice, c.created_at, "
        "c.updated_at, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) "
        "FROM conversations c WHERE c.workspace = ? ORDER BY c.created_at, c.rowid",
        (workspace,),
    ).fetchall()
    return [(ConversationRow._make(r[:7]), int(r[7])) for r in rows]


def messages_of(conn: sqlite3.Connection, conversation_id: str) -> list[Message]:
    """A conversation's messages in creation order (the index gives the order: no sort)."""
    rows = conn.execute(SELECT_MESSAGES, (conversation_id,)).fetchall()
    return list(map(Message._make, rows))


def read_comparisons(
    conn: sqlite3.Connection, version: int, where: str, args: tuple[Any, ...]
) -> list[Comparison]:
    if version < 2:
        return []
    heads = conn.execute(
        "SELECT id, workspace, prompt, blind, vote, created_at, conversation_id "
        f"FROM comparisons WHERE {where} ORDER BY created_at, rowid",
        args,
    ).fetchall()
    if not heads:
        return []
    results: dict[str, list[ComparisonResult]] = {}
    for row in conn.execute(
        "SELECT r.comparison_id, r.model, r.text, r.status, r.prompt_tokens, r.new_tokens, "
        "r.time_to_first_token_s, r.tokens_per_s, r.duration_s, r.error "
        "FROM comparison_results r JOIN comparisons c ON c.id = r.comparison_id "
        f"WHERE c.{where} ORDER BY r.comparison_id, r.position",
        args,
    ):
        usage = Usage(*row[4:9])
        results.setdefault(row[0], []).append(
            ComparisonResult(
                model=row[1],
                text=row[2],
                status=row[3],
                usage=None if usage == Usage() else usage,
                error=row[9],
            )
        )
    return [
        Comparison(
            id=h[0],
            workspace=h[1],
            prompt=h[2],
            results=tuple(results.get(h[0], ())),
            blind=bool(h[3]),
            vote=h[4],
            created_at=h[5],
            conversation_id=h[6],
        )
        for h in heads
    ]


def apply(conn: sqlite3.Connection, op: Any) -> None:
    match op:
        case CreateConversation(row):
            conn.execute(PUT_CONVERSATION, row)
        case UpdateConversation(row):
            conn.execute(
                "UPDATE conversations SET title = ?, model = ?, updated_at = ? WHERE id = ?",
                (row.title, row.model, row.updated_at, row.id),
            )
        case DeleteConversation(cid):
            conn.execute("DELETE FROM conversations WHERE id = ?", (cid,))
        case PutMessage(cid, message):
            conn.execute(PUT_MESSAGE, (cid, *message))
        case UpdateText(mid, content, status):
            conn.execute(
                "UPDATE messages SET content = ?, status = ? WHERE id = ?", (content, status, mid)
            )
        case SetChoice(cid, None, child):
            conn.execute("UPDATE conversations SET root_choice = ? WHERE id = ?", (child, cid))
        case SetChoice(_, parent, child):
            conn.execute("UPDATE messages SET active_child = ? WHERE id = ?", (child, parent))
        case PutSettings(workspace, values):
            conn.executemany(
                "INSERT INTO settings (workspace, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (workspace, key) DO UPDATE SET value = excluded.value",
                [(workspace, k, v) for k, v in values],
            )
        case PutComparison(c):
            conn.execute(
                "INSERT INTO comparisons (id, workspace, conversation_id, prompt, blind, vote, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "prompt = excluded.prompt, blind = excluded.blind, vote = excluded.vote",
                (
                    c.id,
                    c.workspace,
                    c.conversation_id,
                    c.prompt,
                    int(c.blind),
                    c.vote,
                    c.created_at,
                ),
            )
            conn.execute("DELETE FROM comparison_results WHERE comparison_id = ?", (c.id,))
            conn.executemany(
                "INSERT INTO comparison_results (comparison_id, position, model, text, status, "
                "prompt_tokens, new_tokens, time_to_first_token_s, tokens_per_s, duration_s, "
                "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (c.id, i, r.model, r.text, r.status, *(r.usage or Usage()), r.error)
                    for i, r in enumerate(c.results)
                ],
            )
        case SetVote(xid, vote):
            conn.execute("UPDATE comparisons SET vote = ? WHERE id = ?", (vote, xid))
        case DeleteComparison(xid):
            conn.execute("DELETE FROM comparisons WHERE id = ?", (xid,))
        case _:  # pragma: no cover - every Op is matched above
            raise TypeError(f"Unknown change operation {op!r}")
