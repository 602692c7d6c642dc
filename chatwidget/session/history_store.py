"""HistoryStore: the session's conversations kept in a :class:`~chatwidget.history.History`.

This is the :class:`~chatwidget.session.store.ConversationStore` a widget uses: every change
is one atomic change of the history (an SQLite file, or memory with ``history=False``), and
the conversation is a tree, so Regenerate and Edit keep the earlier versions as siblings.
Messages are addressed by their index in the *active branch*, as the session expects.

- Regenerate: :meth:`truncate_after_last_user` does not delete; it marks the last user
  message as the parent of the next reply, which then starts a sibling of the old reply.
- Streaming: a reply's text collects in the session's delta stream; :meth:`checkpointer`
  gives the checkpointer whose O(1) ``poke`` the stream calls per piece, and the history's
  writer thread reads the text so far at most once per checkpoint interval.
- Two widgets of one kernel on one file and workspace never show the same conversation
  (both would write it): the first claims them, a later one starts its own. Claims end
  when the widget closes.
- Reads convert history messages to the session's :class:`~chatwidget.session.messages.Message`
  (with ``version`` / ``versions`` for the pager), only for the slice asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chatwidget.errors import UnknownConversationError
from chatwidget.history import History
from chatwidget.history.changes import Change, UpdateText
from chatwidget.history.checkpoint import Checkpointer
from chatwidget.history.history import HEAD
from chatwidget.history.types import Message as HistoryMessage
from chatwidget.history.types import Usage, Versions
from chatwidget.session.messages import ConversationInfo, Message

_USAGE_FIELDS = frozenset(Usage._fields)

_claims_lock = threading.Lock()
#: history file -> ids of its conversations shown by a live widget of this process
_claims: dict[str, set[str]] = {}


class HistoryStore:
    """A :class:`~chatwidget.session.store.ConversationStore` over a ``History``.

    Thread-safe: the history has its own lock; this object adds only the pending parent of a
    regenerated reply and the checkpointers of replies being written (under its own lock).
    """

    def __init__(self, history: History) -> None:
        self._h = history
        self._lock = threading.Lock()
        # conversation id -> (id, index) of the user message the next reply goes under
        self._reply_parent: dict[str, tuple[str, int]] = {}
        self._checkpointers: dict[str, Checkpointer] = {}
        path = history.path
        self._file = None if path is None else str(path.resolve())
        self._mine: dict[str, None] = {}  # the conversations this store shows, oldest first
        for conv in history.conversations():
            self.adopt(conv.id, strict=False)

    def adopt(self, conversation_id: str, *, strict: bool = True) -> bool:
        """Show a conversation of the history here, unless another widget of this process
        shows it (then False, or ``RuntimeError`` when ``strict``)."""
        if self._file is not None:
            with _claims_lock:
                claimed = _claims.setdefault(self._file, set())
                if conversation_id in claimed and conversation_id not in self._mine:
                    if strict:
                        raise RuntimeError(
                            f"Conversation {conversation_id!r} is open in another widget of "
                            "this kernel: use that widget, or close it first."
                        )
                    return False
                claimed.add(conversation_id)
        self._mine[conversation_id] = None
        return True

    def release(self) -> None:
        """Give up this store's conversations (the widget closed)."""
        if self._file is not None:
            with _claims_lock:
                _claims.get(self._file, set()).difference_update(self._mine)

    @property
    def backend(self) -> History:
        """The history this store keeps the conversations in."""
        return self._h

    # ------------------------------------------------------------------ ConversationStore

    def create(self, title: str | None = None) -> ConversationInfo:
        cid = self._h.create_conversation(title).id
        self.adopt(cid)
        return self._info(cid)

    def ids(self) -> list[str]:
        return list(self._mine)

    def info(self, conversation_id: str) -> ConversationInfo:
        return self._info(conversation_id)

    def infos(self) -> list[ConversationInfo]:
        return [self._info(cid) for cid in self._mine]

    def messages(
        self, conversation_id: str, start: int = 0, stop: int | None = None
    ) -> list[Message]:
        with self._lock:
            pending = self._reply_parent.get(conversation_id)
        if pending is not None:  # a regenerate starting: the branch ends at its user message
            stop = pending[1] + 1 if stop is None else min(stop, pending[1] + 1)
        return [self._convert(m) for m in self._h.messages(conversation_id, start, stop)]

    def history(self, conversation_id: str) -> list[dict[str, str]]:
        """The prompt's messages (shared dicts: read, never change them)."""
        with self._lock:
            pending = self._reply_parent.get(conversation_id)
        # a regenerate starting: the branch ends at its user message
        return self._h.chat_messages(conversation_id, None if pending is None else pending[1] + 1)

    def rename(self, conversation_id: str, title: str) -> None:
        self._h.rename(conversation_id, title)

    def delete(self, conversation_id: str) -> None:
        with self._lock:
            self._reply_parent.pop(conversation_id, None)
        self._h.delete(conversation_id)
        self._mine.pop(conversation_id, None)
        if self._file is not None:
            with _claims_lock:
                _claims.get(self._file, set()).discard(conversation_id)

    def append(self, conversation_id: str, message: Message) -> int:
        with self._lock:
            reply = message.role == "assistant"
            pending = self._reply_parent.pop(conversation_id, None) if reply else None
        self._h.add_message(
            conversation_id,
            message.role,
            message.content,
            parent_id=HEAD if pending is None else pending[0],
            status=message.status,
            model=message.model,
            message_id=message.id,
        )
        return self._h.branch_length(conversation_id) - 1

    def update(self, conversation_id: str, message_id: str, **changes: Any) -> Message:
        """End a reply being written (``status`` done / stopped / error): text, model, usage
        and error saved as one change. Only replies change after they are written."""
        with self._lock:
            checkpointer = self._checkpointers.pop(message_id, None)
        if checkpointer is not None:
            checkpointer.close()
        status = changes.pop("status", None)
        current = self._h.message(message_id)  # raises UnknownMessageError (a KeyError)
        if current.status != "streaming" or status in (None, "streaming"):
            raise ValueError(f"Message {message_id!r} is not a reply being written.")
        usage = {k: changes.pop(k) for k in list(changes) if k in _USAGE_FIELDS}
        done = self._h.finish_reply(
            message_id,
            status=status,
            text=changes.pop("content", None),
            model=changes.pop("model", None),
            usage=Usage(**usage) if usage else None,
            error=changes.pop("error", None),
        )
        if done is None:
            raise KeyError(f"Conversation {conversation_id!r} was deleted.")
        return self._convert(done)

    def truncate_after_last_user(self, conversation_id: str) -> int | None:
        """Regenerate: the next reply goes under the last user message, beside the old reply
        (kept as a version). Returns how many messages precede the new reply."""
        last = self._h.last_of_role(conversation_id, "user")
        if last is None:
            return None
        index, message_id = last
        with self._lock:
            self._reply_parent[conversation_id] = (message_id, index)
        return index + 1

    def checkpointer(self, message_id: str, text: Callable[[], str | None]) -> Checkpointer:
        """The checkpointer of reply ``message_id``: call its O(1) ``poke`` after every
        streamed piece, and ``arm`` it once the reply's row is appended; its text so far
        (``text()``, from the delta stream) is saved at most once per checkpoint interval,
        on the history's writer thread."""

        def produce() -> Change | None:
            so_far = text()
            if not so_far:  # no text yet, or the reply ended (its final text goes separately)
                return None
            return Change("checkpoint", (UpdateText(message_id, so_far, "streaming"),))

        checkpointer = Checkpointer(self._h.store, message_id, produce, self._h.checkpoint_interval)
        with self._lock:
            self._checkpointers[message_id] = checkpointer
        return checkpointer

    # ------------------------------------------------------------------ branches

    def versions(self, message_id: str) -> Versions:
        return self._h.versions(message_id)

    def edit(self, message_id: str, text: str) -> Message:
        """A new version of a user message (a new branch from there), now the head."""
        return self._convert(self._h.edit(message_id, text))

    def select_version(self, message_id: str, index: int) -> None:
        self._h.select_version(message_id, index)

    def conversation_of(self, message_id: str) -> str:
        return self._h.conversation_of(message_id)

    # ------------------------------------------------------------------ internals

    def _length(self, conversation_id: str) -> int:
        with self._lock:
            pending = self._reply_parent.get(conversation_id)
        return pending[1] + 1 if pending else self._h.branch_length(conversation_id)

    def _info(self, conversation_id: str) -> ConversationInfo:
        if conversation_id not in self._mine:
            raise UnknownConversationError(
                f"No conversation {conversation_id!r} in this widget; known: "
                f"{list(self._mine)[:10]}."
            )
        c = self._h.conversation(conversation_id)
        return ConversationInfo(c.id, c.title, self._length(c.id), c.model)

    def _convert(self, m: HistoryMessage) -> Message:
        v = self._h.versions(m.id)
        return Message(
            id=m.id,
            role=m.role,
            content=m.content,
            status=m.status,
            model=m.model,
            new_tokens=m.new_tokens,
            tokens_per_s=m.tokens_per_s,
            error=m.error,
            version=v.index,
            versions=v.count,
        )
