"""The store interface, and :class:`MemoryStore`, the store of ``history=False``.

A :class:`Store` keeps conversation rows and commits :class:`~chatwidget.history.changes.Change`
values. Two implementations share this interface:

- :class:`~chatwidget.history.sqlite_store.SQLiteStore`: a file, written by its own thread;
- :class:`MemoryStore`: dictionaries in this process, applied at once, gone at exit.

Threading: every method may be called from any thread. ``submit``, ``schedule`` and
``cancel`` never block on I/O. Reads (``load_*``, ``list_*``) run on the caller's thread.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatwidget.history.changes import (
    Change,
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
from chatwidget.history.types import Comparison, Message, StoreWarning, WorkspaceInfo

log = logging.getLogger("chatwidget.history")

#: Called by the store, with no locks held, whenever ``warning`` or ``notices`` change.
Listener = Callable[[], None]
#: Returns changes that recreate everything its owner holds, and the ``submitted`` count
#: they include. A store that had to start a new file calls it to rewrite the file.
SnapshotSource = Callable[[], tuple[list[Change], int]]
#: Builds a change when a scheduled checkpoint is due; None if there is nothing to write.
Producer = Callable[[], Change | None]


class Store(abc.ABC):
    """Where conversations are kept. See the module docstring for the threading rules."""

    def __init__(self) -> None:
        self._listener: Listener | None = None
        self._snapshot_source: SnapshotSource | None = None

    @property
    @abc.abstractmethod
    def path(self) -> Path | None:
        """The file, or None for a store in memory."""

    @property
    def warning(self) -> StoreWarning | None:
        """The problem that stops writes right now, or None when every change is saved."""
        return None

    @property
    def notices(self) -> tuple[StoreWarning, ...]:
        """Things that happened once and that the user should know (a file moved aside)."""
        return ()

    @property
    @abc.abstractmethod
    def submitted(self) -> int:
        """How many changes were submitted so far."""

    def set_listener(self, listener: Listener | None) -> None:
        """Call ``listener()`` (on the store's thread) when ``warning`` or ``notices`` change."""
        self._listener = listener

    def set_snapshot_source(self, source: SnapshotSource | None) -> None:
        """Register what recreates the owner's state in a new file (see ``SnapshotSource``)."""
        self._snapshot_source = source

    # ---------------------------------------------------------------- reads

    @abc.abstractmethod
    def load_workspace(self, workspace: str) -> WorkspaceData:
        """Every conversation (whole trees), the settings and comparisons of a workspace."""

    @abc.abstractmethod
    def load_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """One conversation of any workspace, or None."""

    @abc.abstractmethod
    def list_workspaces(self) -> list[WorkspaceInfo]:
        """Every workspace that holds a conversation, most recently changed first."""

    @abc.abstractmethod
    def list_conversations(self, workspace: str) -> list[tuple[ConversationRow, int]]:
        """The conversations of a workspace with their message counts, oldest first."""

    @abc.abstractmethod
    def list_comparisons(self, workspace: str) -> list[Comparison]:
        """The comparisons of a workspace, oldest first."""

    # ---------------------------------------------------------------- writes

    @abc.abstractmethod
    def submit(self, change: Change) -> None:
        """Commit a change atomically, in submission order. Never blocks on I/O."""

    @abc.abstractmethod
    def schedule(self, key: str, due: float, producer: Producer) -> None:
        """Commit ``producer()`` at ``time.monotonic() >= due`` (replaces ``key``'s entry)."""

    @abc.abstractmethod
    def cancel(self, key: str) -> None:
        """Drop a scheduled entry that has not run yet."""

    @abc.abstractmethod
    def flush(self, timeout: float | None = None) -> bool:
        """Commit what is pending now, scheduled entries included; True if all is saved.

        Returns False at once while a warning stands (retries go on in the background)."""

    def retry_now(self) -> None:  # noqa: B027 - a no-op where nothing can fail
        """Retry pending writes at once instead of after the back-off."""

    @abc.abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Flush (up to ``timeout``), then release the file. Idempotent."""

    def _notify(self) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            listener()
        except Exception:
            log.exception("A history status listener failed")


class MemoryStore(Store):
    """A store in this process's memory: the same interface, nothing written to disk.

    Changes are applied at once on the caller's thread (under a lock). Scheduled streaming
    checkpoints are dropped: the owner keeps the streaming text and submits the final one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._conversations: dict[str, ConversationRow] = {}
        self._messages: dict[str, dict[str, Message]] = {}  # conversation -> id -> message
        self._choices: dict[str, dict[str, str]] = {}  # conversation -> parent -> child
        self._owner: dict[str, str] = {}  # message -> conversation
        self._settings: dict[str, dict[str, str]] = {}
        self._comparisons: dict[str, Comparison] = {}
        self._submitted = 0

    @property
    def path(self) -> Path | None:
        return None

    @property
    def submitted(self) -> int:
        return self._submitted

    def load_workspace(self, workspace: str) -> WorkspaceData:
        with self._lock:
            records = [
                self._record(cid)
                for cid, row in self._conversations.items()
                if row.workspace == workspace
            ]
            settings = {k: json.loads(v) for k, v in self._settings.get(workspace, {}).items()}
            comparisons = [c for c in self._comparisons.values() if c.workspace == workspace]
        return WorkspaceData(records, settings, comparisons)

    def load_conversation(self, conversation_id: str) -> ConversationRecord | None:
        with self._lock:
            if conversation_id not in self._conversations:
                return None
            return self._record(conversation_id)

    def list_workspaces(self) -> list[WorkspaceInfo]:
        with self._lock:
            found: dict[str, tuple[int, float]] = {}
            for row in self._conversations.values():
                count, updated = found.get(row.workspace, (0, 0.0))
                found[row.workspace] = (count + 1, max(updated, row.updated_at))
        infos = [WorkspaceInfo(name, n, t) for name, (n, t) in found.items()]
        return sorted(infos, key=lambda w: -w.updated_at)

    def list_conversations(self, workspace: str) -> list[tuple[ConversationRow, int]]:
        with self._lock:
            return [
                (row, len(self._messages[cid]))
                for cid, row in self._conversations.items()
                if row.workspace == workspace
            ]

    def list_comparisons(self, workspace: str) -> list[Comparison]:
        with self._lock:
            return [c for c in self._comparisons.values() if c.workspace == workspace]

    def submit(self, change: Change) -> None:
        with self._lock:
            self._submitted += 1
            for op in change.ops:
                self._apply(op)

    def schedule(self, key: str, due: float, producer: Producer) -> None:
        pass  # the final text is submitted when the reply ends

    def cancel(self, key: str) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float = 10.0) -> None:
        pass

    # ---------------------------------------------------------------- internals

    def _record(self, cid: str) -> ConversationRecord:
        return ConversationRecord(
            self._conversations[cid], list(self._messages[cid].values()), dict(self._choices[cid])
        )

    def _apply(self, op: Any) -> None:
        match op:
            case CreateConversation(row):
                self._conversations[row.id] = row
                self._messages.setdefault(row.id, {})
                self._choices.setdefault(row.id, {})
            case UpdateConversation(row):
                old = self._conversations.get(row.id)
                if old is not None:
                    self._conversations[row.id] = old._replace(
                        title=row.title, model=row.model, updated_at=row.updated_at
                    )
            case DeleteConversation(cid):
                self._conversations.pop(cid, None)
                for mid in self._messages.pop(cid, {}):
                    self._owner.pop(mid, None)
                self._choices.pop(cid, None)
            case PutMessage(cid, message):
                if cid in self._conversations:
                    self._messages[cid][message.id] = message
                    self._owner[message.id] = cid
            case UpdateText(mid, content, status):
                owner = self._owner.get(mid)
                if owner is not None:
                    msgs = self._messages[owner]
                    msgs[mid] = msgs[mid]._replace(content=content, status=status)
            case SetChoice(cid, parent_id, child_id):
                current = self._conversations.get(cid)
                if current is None:
                    return
                if parent_id is None:
                    self._conversations[cid] = current._replace(root_choice=child_id)
                else:
                    self._choices[cid][parent_id] = child_id
            case PutSettings(workspace, values):
                self._settings.setdefault(workspace, {}).update(values)
            case PutComparison(comparison):
                self._comparisons[comparison.id] = comparison
            case SetVote(xid, vote):
                old_c = self._comparisons.get(xid)
                if old_c is not None:
                    self._comparisons[xid] = _with_vote(old_c, vote)
            case DeleteComparison(xid):
                self._comparisons.pop(xid, None)
            case _:  # pragma: no cover - every Op is matched above
                raise TypeError(f"Unknown change operation {op!r}")


def _with_vote(comparison: Comparison, vote: str | None) -> Comparison:
    return dataclasses.replace(comparison, vote=vote)
