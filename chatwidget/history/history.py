"""History: the conversations of one workspace, in memory, saved to a store as they change.

This is the object a session uses. It holds every loaded conversation as a
:class:`~chatwidget.history.tree.ConversationTree` and turns each user action into one
atomic :class:`~chatwidget.history.changes.Change` for its :class:`~chatwidget.history.store.Store`.
Reads are answered from memory, so reading the active branch costs O(turns) and no SQL.

Threading:

- Every method may be called from any thread; one lock guards the in-memory state and is
  held only for in-memory work (never across disk I/O).
- No method blocks on the disk except :meth:`open` / the constructor (they read the
  workspace), the reads of *other* workspaces (:meth:`workspaces`,
  :meth:`list_conversations` with another workspace, :meth:`open_conversation`,
  :meth:`comparisons` with another workspace), :meth:`flush` and :meth:`close`.
  Writes go to the store's writer thread.
- The streaming calls, :meth:`append_text` (per token, O(1)) and :meth:`finish_reply`,
  are meant for the reply thread; everything else for the kernel's main thread.
- ``on_status`` is called with no arguments, on the store's writer thread and with no
  history lock held, when :attr:`warning` or :attr:`notices` change: read them then.

Message ids are unique across conversations, so message calls take just the message id.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from chatwidget.errors import UnknownConversationError
from chatwidget.history import formats
from chatwidget.history.changes import (
    Change,
    ConversationRecord,
    ConversationRow,
    CreateConversation,
    DeleteComparison,
    DeleteConversation,
    Op,
    PutComparison,
    PutMessage,
    PutSettings,
    SetChoice,
    SetVote,
    UpdateConversation,
    UpdateText,
)
from chatwidget.history.checkpoint import Checkpointer
from chatwidget.history.errors import UnknownMessageError
from chatwidget.history.location import default_path, default_workspace
from chatwidget.history.sqlite_store import SQLiteStore
from chatwidget.history.store import MemoryStore, Store
from chatwidget.history.tree import ConversationTree
from chatwidget.history.types import (
    FINAL_STATUSES,
    ROLES,
    STATUSES,
    Comparison,
    ComparisonResult,
    ConversationInfo,
    Message,
    Role,
    Status,
    StoreWarning,
    Usage,
    UsageLike,
    Versions,
    WorkspaceInfo,
    new_id,
)

#: The setting that remembers the active conversation of a workspace.
ACTIVE_KEY = "chatwidget.active_conversation"
_MAX_TITLE = 200
_DEFAULT_TITLE = re.compile(r"Chat [0-9]{1,9}")


class _Head:
    def __repr__(self) -> str:
        return "HEAD"


#: ``parent_id`` default of :meth:`History.add_message`: the head of the active branch.
HEAD: Any = _Head()

HistoryOption = str | os.PathLike[str] | bool | None


class History:
    """The conversations of one workspace, kept in memory and saved as they change.

    Use :meth:`open` to get one. ``workspace`` defaults to
    :func:`~chatwidget.history.location.default_workspace`; ``checkpoint_interval`` is the
    least time between two saves of a streaming reply.
    """

    def __init__(
        self,
        store: Store,
        workspace: str | None = None,
        *,
        checkpoint_interval: float = 1.0,
        on_status: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._workspace = workspace if workspace else default_workspace()
        self._interval = checkpoint_interval
        self._on_status = on_status
        self._lock = threading.RLock()
        self._rows: dict[str, ConversationRow] = {}
        self._trees: dict[str, ConversationTree] = {}
        self._owner: dict[str, str] = {}  # message id -> conversation id
        self._checkpointers: dict[str, Checkpointer] = {}
        self._deleted: set[str] = set()
        self._settings: dict[str, Any] = {}
        self._comparisons: dict[str, Comparison] = {}
        self._closed = False
        store.set_listener(self._status_changed)
        with _gc_paused():  # tens of thousands of small objects: no collections meanwhile
            data = store.load_workspace(self._workspace)
            for record in data.conversations:
                self._add_record(record)
        self._settings = dict(data.settings)
        self._comparisons = {c.id: c for c in data.comparisons}
        store.set_snapshot_source(self._snapshot)

    @classmethod
    def open(
        cls,
        history: HistoryOption = None,
        workspace: str | None = None,
        *,
        checkpoint_interval: float = 1.0,
        on_status: Callable[[], None] | None = None,
        **store_options: Any,
    ) -> History:
        """Open the history as ``ChatWidget(history=...)`` means it.

        ``history`` is a path (``str`` or path-like) to use that file; None or True for
        :func:`~chatwidget.history.location.default_path` (``$CHATWIDGET_HISTORY`` or the
        user data folder); False for memory only. ``store_options`` go to
        :class:`~chatwidget.history.sqlite_store.SQLiteStore` (``busy_timeout``, ...).
        """
        store: Store
        if history is False:
            store = MemoryStore()
        else:
            path = default_path() if history is None or history is True else Path(history)
            store = SQLiteStore(path, **store_options)
        return cls(store, workspace, checkpoint_interval=checkpoint_interval, on_status=on_status)

    # ------------------------------------------------------------------ state of the store

    @property
    def workspace(self) -> str:
        return self._workspace

    @property
    def checkpoint_interval(self) -> float:
        """The least time between two saves of a streaming reply, in seconds."""
        return self._interval

    @property
    def path(self) -> Path | None:
        """The history file, or None in memory."""
        return self._store.path

    @property
    def store(self) -> Store:
        return self._store

    @property
    def warning(self) -> StoreWarning | None:
        """What stops saving right now (changes wait in memory), or None when all is saved."""
        return self._store.warning

    @property
    def notices(self) -> tuple[StoreWarning, ...]:
        """One-off events to show the user: a damaged file moved aside, a newer file, ..."""
        return self._store.notices

    def retry_now(self) -> None:
        """Retry saving now instead of after the back-off (a "Retry" button)."""
        self._store.retry_now()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every change so far is saved (streaming text included); True if so.

        Cheap when the file is healthy (one commit); False at once while a :attr:`warning`
        stands. A session that wants a finished turn on disk before it reports the reply
        done calls ``flush(timeout)`` on the reply thread after :meth:`finish_reply`.
        """
        return self._store.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Save what is pending (up to ``timeout``) and release the file. Idempotent.

        A reply still streaming is saved as far as it got; it reads as interrupted after a
        restore.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._store.close(timeout)

    # ------------------------------------------------------------------ conversations

    def conversations(self) -> list[ConversationInfo]:
        """The loaded conversations (this workspace's and any opened), oldest first."""
        with self._lock:
            return [self._info(cid) for cid in self._rows]

    def conversation(self, conversation_id: str) -> ConversationInfo:
        with self._lock:
            self._require(conversation_id)
            return self._info(conversation_id)

    def create_conversation(
        self, title: str | None = None, model: str | None = None
    ) -> ConversationInfo:
        """Start an empty conversation in this workspace."""
        with self._lock:
            now = time.time()
            name = _clean_title(title) if title is not None else self._next_default_title()
            row = ConversationRow(new_id("c"), self._workspace, name, model, None, now, now)
            self._rows[row.id] = row
            self._trees[row.id] = ConversationTree()
            self._submit("new conversation", CreateConversation(row))
            return self._info(row.id)

    def rename(self, conversation_id: str, title: str) -> ConversationInfo:
        """Give a conversation a new title (stripped, at most 200 characters)."""
        with self._lock:
            row = self._touch(conversation_id, title=_clean_title(title))
            self._submit("rename", UpdateConversation(row))
            return self._info(conversation_id)

    def set_model(self, conversation_id: str, model: str | None) -> ConversationInfo:
        """Remember the model the user asked for in a conversation (a repo id)."""
        with self._lock:
            row = self._touch(conversation_id, model=model)
            self._submit("model change", UpdateConversation(row))
            return self._info(conversation_id)

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation and all its messages (a reply still streaming into it is
        ignored from now on)."""
        with self._lock:
            self._require(conversation_id)
            tree = self._trees.pop(conversation_id)
            del self._rows[conversation_id]
            for m in tree.messages():
                self._owner.pop(m.id, None)
                checkpointer = self._checkpointers.pop(m.id, None)
                if checkpointer is not None:
                    checkpointer.close()
            self._deleted.add(conversation_id)
            self._submit("delete", DeleteConversation(conversation_id))

    @property
    def active_conversation_id(self) -> str | None:
        """The conversation the workspace showed last (see :meth:`set_active`), if loaded."""
        with self._lock:
            cid = self._settings.get(ACTIVE_KEY)
            return cid if isinstance(cid, str) and cid in self._rows else None

    def set_active(self, conversation_id: str) -> None:
        """Remember which conversation is shown, so a restore opens it again."""
        with self._lock:
            self._require(conversation_id)
            if self._settings.get(ACTIVE_KEY) != conversation_id:
                self.set_settings({ACTIVE_KEY: conversation_id})

    # ------------------------------------------------------------------ reading messages

    def messages(
        self, conversation_id: str, start: int = 0, stop: int | None = None
    ) -> list[Message]:
        """The active branch (or its slice ``start:stop``), first message first: O(turns),
        no disk access."""
        with self._lock:
            return self._tree(conversation_id).path(start, stop)

    def branch_length(self, conversation_id: str) -> int:
        """How many messages the active branch has: O(1)."""
        with self._lock:
            return self._tree(conversation_id).depth()

    def last_of_role(self, conversation_id: str, role: Role) -> tuple[int, str] | None:
        """(index in the active branch, id) of its last message with ``role``, or None."""
        with self._lock:
            return self._tree(conversation_id).last_of_role(role)

    def chat_messages(self, conversation_id: str, stop: int | None = None) -> list[dict[str, str]]:
        """The active branch (its first ``stop`` messages) for a chat template:
        ``[{"role", "content"}]`` without the reply being streamed, failed replies and empty
        messages. O(turns), with no dict made per message: the dicts are shared, read-only."""
        with self._lock:
            return self._tree(conversation_id).chat_messages(stop)

    def all_messages(self, conversation_id: str) -> list[Message]:
        """Every message of every branch, in creation order."""
        with self._lock:
            return self._tree(conversation_id).messages()

    def message(self, message_id: str) -> Message:
        with self._lock:
            return self._tree(self._conversation_of(message_id)).get(message_id)

    def conversation_of(self, message_id: str) -> str:
        """The id of the conversation a message belongs to."""
        with self._lock:
            return self._conversation_of(message_id)

    def versions(self, message_id: str) -> Versions:
        """A message's versions (its siblings, oldest first) and which one is shown."""
        with self._lock:
            return self._tree(self._conversation_of(message_id)).versions(message_id)

    # ------------------------------------------------------------------ changing messages

    def add_message(
        self,
        conversation_id: str,
        role: Role,
        content: str,
        *,
        parent_id: str | None = HEAD,
        status: Status = "done",
        model: str | None = None,
        message_id: str | None = None,
    ) -> Message:
        """Add a message under ``parent_id`` (default: the head) and make it the head.

        ``message_id`` picks the new message's id (it must be unique in the file, e.g.
        from :func:`~chatwidget.history.types.new_id`); by default a new one is made.

        Adding under the head appends to the active branch; adding under another message
        starts a new branch there (the old one stays reachable as a version).
        """
        if role not in ROLES:
            raise ValueError(f"A message's role must be one of {ROLES}, not {role!r}.")
        if status not in STATUSES:
            raise ValueError(f"A message's status must be one of {STATUSES}, not {status!r}.")
        if not isinstance(content, str):
            raise TypeError(f"A message's content must be text, not {type(content).__name__}.")
        with self._lock:
            tree = self._tree(conversation_id)
            parent = tree.head_id if parent_id is HEAD else parent_id
            mid = message_id if message_id is not None else new_id("m")
            msg = Message(mid, parent, role, content, status, model, created_at=time.time())
            choices = tree.add(msg)  # none in the common case: a reply under the head
            self._owner[msg.id] = conversation_id
            row = self._touch(conversation_id)
            ops: tuple[Op, ...] = (
                PutMessage(conversation_id, msg),
                UpdateConversation(row),
                *(SetChoice(conversation_id, parent, child) for parent, child in choices),
            )
            # an empty reply starting: its row may wait for the reply's first checkpoint
            can_wait = status == "streaming" and not content
            self._store.submit(Change("message", ops, can_wait=can_wait))
            return msg

    def add_user_message(self, conversation_id: str, text: str) -> Message:
        """The user's next message, at the head of the active branch."""
        return self.add_message(conversation_id, "user", text)

    def begin_reply(
        self, conversation_id: str, model: str | None, *, parent_id: str | None = HEAD
    ) -> Message:
        """An empty ``"streaming"`` reply under ``parent_id`` (default: the head).

        Stream into it with :meth:`append_text` and end it with :meth:`finish_reply`; it is
        checkpointed at most once per ``checkpoint_interval`` meanwhile.
        """
        with self._lock:
            msg = self.add_message(
                conversation_id,
                "assistant",
                "",
                parent_id=parent_id,
                status="streaming",
                model=model,
            )
            self._checkpointers[msg.id] = Checkpointer(
                self._store, msg.id, lambda: self._checkpoint(msg.id), self._interval
            )
            return msg

    def append_text(self, message_id: str, piece: str) -> bool:
        """Add streamed text to a reply: O(1), independent of the history's length.

        Returns False (and does nothing) when the message is gone: its conversation was
        deleted while the reply ran. Raises ``ValueError`` for a message not streaming.
        """
        with self._lock:
            cid = self._owner.get(message_id)
            if cid is None:
                return False
            checkpointer = self._checkpointers.get(message_id)
            if checkpointer is None:
                raise ValueError(
                    f"Message {message_id!r} is not streaming: start it with begin_reply."
                )
            self._trees[cid].append_text(message_id, piece)
            checkpointer.poke()
            return True

    def finish_reply(
        self,
        message_id: str,
        *,
        status: Status = "done",
        text: str | None = None,
        model: str | None = None,
        usage: UsageLike | None = None,
        error: str | None = None,
    ) -> Message | None:
        """End a reply: its final status, text (default: what was streamed), model and
        usage, saved as one change. Returns None when its conversation was deleted."""
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"A finished reply's status is one of {FINAL_STATUSES}, not {status!r}."
            )
        changes: dict[str, Any] = {"status": status}
        if text is not None:
            changes["content"] = text
        if model is not None:
            changes["model"] = model
        if usage is not None:
            changes.update(Usage.of(usage)._asdict())
        if error is not None:
            changes["error"] = error
        with self._lock:
            cid = self._owner.get(message_id)
            if cid is None:
                return None
            checkpointer = self._checkpointers.pop(message_id, None)
            if checkpointer is not None:
                checkpointer.close()
            msg = self._trees[cid].update(message_id, **changes)
            row = self._touch(cid)
            self._submit("reply", PutMessage(cid, msg), UpdateConversation(row))
            return msg

    def regenerate(self, message_id: str, model: str | None) -> Message:
        """A new streaming version of a reply (a sibling of ``message_id``).

        Given a user message instead, the new reply goes under it. The earlier reply stays
        as a version; the head moves to the new one.
        """
        with self._lock:
            cid = self._conversation_of(message_id)
            msg = self._trees[cid].get(message_id)
            if msg.role == "assistant":
                parent = msg.parent_id
            elif msg.role == "user":
                parent = msg.id
            else:
                raise ValueError("A system message has no reply to regenerate.")
            return self.begin_reply(cid, model, parent_id=parent)

    def edit(self, message_id: str, text: str) -> Message:
        """A new version of a user (or system) message: a new branch from that point.

        Returns the new message, now the head; the session then starts its reply with
        :meth:`begin_reply`. The old branch stays reachable through :meth:`versions`.
        """
        if not text.strip():
            raise ValueError("An edited message cannot be empty.")
        with self._lock:
            cid = self._conversation_of(message_id)
            msg = self._trees[cid].get(message_id)
            if msg.role == "assistant":
                raise ValueError(
                    "Only your own messages can be edited; regenerate a reply instead."
                )
            return self.add_message(cid, msg.role, text, parent_id=msg.parent_id)

    def select_version(self, message_id: str, index: int) -> Message | None:
        """Show version ``index`` (0-based) of a message; returns the new head.

        The head moves into that version's subtree: to the leaf shown there last, else to
        its newest leaf.
        """
        with self._lock:
            cid = self._conversation_of(message_id)
            tree = self._trees[cid]
            choices = tree.select_version(message_id, index)
            self._submit("version", *(SetChoice(cid, parent, child) for parent, child in choices))
            return tree.head

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict[str, Any]:
        """This workspace's settings (JSON values), as last set."""
        with self._lock:
            return dict(self._settings)

    def set_settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Set some settings (JSON-serialisable values) in one change; returns them all."""
        encoded = []
        for key, value in values.items():
            if not isinstance(key, str):
                raise TypeError(f"Setting names are text, not {type(key).__name__}.")
            try:
                encoded.append((key, json.dumps(value)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"Setting {key!r} cannot be saved: {exc}.") from None
        with self._lock:
            self._settings.update(values)
            self._submit("settings", PutSettings(self._workspace, tuple(encoded)))
            return dict(self._settings)

    # ------------------------------------------------------------------ other workspaces

    def workspaces(self) -> list[WorkspaceInfo]:
        """Every workspace of the file with its conversation count (reads the file)."""
        stored = [w for w in self._store.list_workspaces() if w.name != self._workspace]
        with self._lock:
            mine = [r for r in self._rows.values() if r.workspace == self._workspace]
        if mine:
            stored.append(
                WorkspaceInfo(self._workspace, len(mine), max(r.updated_at for r in mine))
            )
        return sorted(stored, key=lambda w: -w.updated_at)

    def list_conversations(self, workspace: str | None = None) -> list[ConversationInfo]:
        """The conversations of a workspace (default: this one), oldest first."""
        ws = self._workspace if workspace is None else workspace
        stored = [] if ws == self._workspace else self._store.list_conversations(ws)
        with self._lock:
            out: dict[str, ConversationInfo] = {}
            for row, count in stored:
                if row.id not in self._deleted:
                    out[row.id] = _info_of(row, count, None)
            for cid, row in self._rows.items():
                if row.workspace == ws:
                    out[cid] = self._info(cid)
            return sorted(out.values(), key=lambda c: c.created_at)

    def open_conversation(self, conversation_id: str) -> ConversationInfo:
        """Load a conversation of any workspace into this history (reads the file).

        It keeps its workspace; it is then listed by :meth:`conversations` and can be
        changed like the others.
        """
        with self._lock:
            if conversation_id in self._rows:
                return self._info(conversation_id)
        record = (
            None
            if conversation_id in self._deleted
            else self._store.load_conversation(conversation_id)
        )
        if record is None:
            raise UnknownConversationError(f"No conversation {conversation_id!r} in {self.path}.")
        with self._lock:
            if conversation_id not in self._rows:
                self._add_record(record)
            return self._info(conversation_id)

    # ------------------------------------------------------------------ export and import

    def export_json(self, conversation_id: str) -> dict[str, Any]:
        """The conversation as JSON: OpenAI messages plus the whole tree (see formats)."""
        with self._lock:
            row = self._require(conversation_id)
            return formats.to_json(
                self._trees[conversation_id],
                title=row.title,
                model=row.model,
                created_at=row.created_at,
            )

    def export_markdown(self, conversation_id: str) -> str:
        """The active branch as Markdown."""
        with self._lock:
            row = self._require(conversation_id)
            return formats.to_markdown(self._trees[conversation_id], title=row.title)

    def import_conversation(
        self,
        source: str | os.PathLike[str] | bytes | Sequence[Any] | Mapping[str, Any],
        *,
        title: str | None = None,
    ) -> ConversationInfo:
        """A new conversation from a JSON or Markdown export, or an OpenAI messages list.

        ``source`` is a path, file contents or parsed JSON (see :func:`formats.read`).
        Raises :class:`~chatwidget.history.errors.ImportFormatError` (nothing imported)
        when it is malformed, ``FileNotFoundError`` for a missing file.
        """
        imported = formats.read(source)
        with self._lock:
            now = time.time()
            tree = imported.tree()
            row = ConversationRow(
                new_id("c"),
                self._workspace,
                _clean_title(title) if title is not None else imported.title,
                imported.model,
                tree.root_choice,
                now,
                now,
            )
            self._rows[row.id] = row
            self._trees[row.id] = tree
            for m in imported.messages:
                self._owner[m.id] = row.id
            self._submit("import", *_conversation_ops(row, tree))
            return self._info(row.id)

    # ------------------------------------------------------------------ comparisons

    def save_comparison(
        self,
        prompt: str,
        results: Sequence[ComparisonResult],
        *,
        blind: bool = False,
        vote: str | None = None,
        conversation_id: str | None = None,
    ) -> Comparison:
        """Keep one comparison (a prompt and each model's answer) in this workspace."""
        with self._lock:
            if conversation_id is not None:
                self._require(conversation_id)
            comparison = Comparison(
                id=new_id("x"),
                workspace=self._workspace,
                prompt=prompt,
                results=tuple(results),
                blind=blind,
                vote=vote,
                created_at=time.time(),
                conversation_id=conversation_id,
            )
            self._comparisons[comparison.id] = comparison
            self._submit("comparison", PutComparison(comparison))
            return comparison

    def set_vote(self, comparison_id: str, vote: str | None) -> Comparison:
        """Record (or clear, with None) the user's vote on a comparison of this workspace."""
        with self._lock:
            comparison = self._require_comparison(comparison_id)
            comparison = replace(comparison, vote=vote)
            self._comparisons[comparison_id] = comparison
            self._submit("vote", SetVote(comparison_id, vote))
            return comparison

    def delete_comparison(self, comparison_id: str) -> None:
        with self._lock:
            self._require_comparison(comparison_id)
            del self._comparisons[comparison_id]
            self._submit("delete comparison", DeleteComparison(comparison_id))

    def comparisons(self, workspace: str | None = None) -> list[Comparison]:
        """The comparisons of a workspace (default: this one, from memory), oldest first."""
        if workspace is not None and workspace != self._workspace:
            return self._store.list_comparisons(workspace)
        with self._lock:
            return sorted(self._comparisons.values(), key=lambda c: c.created_at)

    # ------------------------------------------------------------------ internals

    def _submit(self, what: str, *ops: Op) -> None:
        """Caller holds the lock: changes reach the store in the order they were made."""
        self._store.submit(Change(what, ops))

    def _next_default_title(self) -> str:
        """``Chat N`` with N above every loaded ``Chat <number>`` (titles never repeat)."""
        numbers = [
            int(r.title[5:]) for r in self._rows.values() if _DEFAULT_TITLE.fullmatch(r.title)
        ]
        return f"Chat {max([len(self._rows), *numbers]) + 1}"

    def _require(self, conversation_id: str) -> ConversationRow:
        try:
            return self._rows[conversation_id]
        except KeyError:
            raise UnknownConversationError(
                f"No conversation {conversation_id!r}; known: {list(self._rows)[:10]}."
            ) from None

    def _require_comparison(self, comparison_id: str) -> Comparison:
        try:
            return self._comparisons[comparison_id]
        except KeyError:
            raise KeyError(
                f"No comparison {comparison_id!r} in workspace {self._workspace!r}."
            ) from None

    def _tree(self, conversation_id: str) -> ConversationTree:
        self._require(conversation_id)
        return self._trees[conversation_id]

    def _conversation_of(self, message_id: str) -> str:
        try:
            return self._owner[message_id]
        except KeyError:
            raise UnknownMessageError(f"No message {message_id!r} is loaded.") from None

    def _touch(self, conversation_id: str, **changes: Any) -> ConversationRow:
        row = self._require(conversation_id)._replace(updated_at=time.time(), **changes)
        self._rows[conversation_id] = row
        return row

    def _info(self, conversation_id: str) -> ConversationInfo:
        tree = self._trees[conversation_id]
        return _info_of(self._rows[conversation_id], len(tree), tree.head_id)

    def _add_record(self, record: ConversationRecord) -> None:
        messages = record.messages
        if any(m.status == "streaming" for m in messages):
            # Nothing streams into a message loaded from the file: its writer died mid-reply.
            messages = [
                m._replace(status="interrupted") if m.status == "streaming" else m for m in messages
            ]
        cid = record.row.id
        self._rows[cid] = record.row
        self._trees[cid] = ConversationTree.from_messages(
            messages, record.choices, record.row.root_choice
        )
        self._owner.update(dict.fromkeys([m.id for m in messages], cid))

    def _checkpoint(self, message_id: str) -> Change | None:
        """The streaming text of a reply so far (called on the store's writer thread)."""
        with self._lock:
            cid = self._owner.get(message_id)
            if cid is None or message_id not in self._checkpointers:
                return None
            msg = self._trees[cid].get(message_id)
            return Change("checkpoint", (UpdateText(message_id, msg.content, msg.status),))

    def _snapshot(self) -> tuple[list[Change], int]:
        """Changes that recreate everything loaded, for a store that starts a new file."""
        with self._lock:
            changes = [
                Change("restore", tuple(_conversation_ops(row, self._trees[cid])))
                for cid, row in self._rows.items()
            ]
            if self._settings:
                values = tuple((k, json.dumps(v)) for k, v in self._settings.items())
                changes.append(Change("restore", (PutSettings(self._workspace, values),)))
            changes.extend(
                Change("restore", (PutComparison(c),)) for c in self._comparisons.values()
            )
            return changes, self._store.submitted

    def _status_changed(self) -> None:
        callback = self._on_status
        if callback is not None:
            callback()


def _conversation_ops(row: ConversationRow, tree: ConversationTree) -> list[Op]:
    ops: list[Op] = [CreateConversation(row._replace(root_choice=tree.root_choice))]
    ops.extend(PutMessage(row.id, m) for m in tree.messages())
    ops.extend(SetChoice(row.id, parent, child) for parent, child in tree.choices().items())
    return ops


def _info_of(row: ConversationRow, count: int, head_id: str | None) -> ConversationInfo:
    return ConversationInfo(
        id=row.id,
        workspace=row.workspace,
        title=row.title,
        model=row.model,
        created_at=row.created_at,
        updated_at=row.updated_at,
        message_count=count,
        head_id=head_id,
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a restore allocates many objects at once, and in
    a kernel with a big heap each collection it would trigger walks every live object."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _clean_title(title: str) -> str:
    if not isinstance(title, str):
        raise TypeError(f"A conversation title is text, not {type(title).__name__}.")
    cleaned = " ".join(title.split())
    if not cleaned:
        raise ValueError("A conversation title cannot be empty.")
    return cleaned[:_MAX_TITLE]
