"""Where conversations live: the narrow interface the session uses, and its in-memory form.

Every read and write of a conversation by :class:`~chatwidget.session.Session` goes through
:class:`ConversationStore`, so a durable store (SQLite, with branches) can replace
:class:`MemoryStore` without touching the session. Messages are addressed by their index in
the conversation (its active branch), so the widget can page through a long conversation
without copying it.

Streamed text does not go through the store token by token: it collects in the
:class:`~chatwidget.session.deltas.DeltaStream` and reaches the store once, when the reply
ends (``update``).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from chatwidget.errors import UnknownConversationError
from chatwidget.session.messages import ConversationInfo, Message, chat_history, new_id

#: Longest conversation title kept (longer ones are cut).
MAX_TITLE_CHARS = 200


class ConversationStore(Protocol):
    """The conversations of one session, in creation order. Thread-safe.

    Unknown conversation ids raise :class:`~chatwidget.errors.UnknownConversationError`.
    """

    def create(self, title: str | None = None) -> ConversationInfo:
        """Start an empty conversation (titled "Chat N" unless ``title`` is given)."""
        ...

    def ids(self) -> list[str]:
        """Every conversation id, oldest first."""
        ...

    def info(self, conversation_id: str) -> ConversationInfo:
        """Id, title and message count of one conversation."""
        ...

    def infos(self) -> list[ConversationInfo]:
        """:meth:`info` of every conversation, oldest first."""
        ...

    def messages(
        self, conversation_id: str, start: int = 0, stop: int | None = None
    ) -> list[Message]:
        """Messages ``start`` to ``stop`` (a slice) of a conversation."""
        ...

    def history(self, conversation_id: str) -> list[dict[str, str]]:
        """The conversation in chat-template form (``{"role", "content"}``), for a model."""
        ...

    def rename(self, conversation_id: str, title: str) -> None:
        """Retitle a conversation; raises ValueError for an empty title."""
        ...

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation and its messages."""
        ...

    def append(self, conversation_id: str, message: Message) -> int:
        """Add a message at the end; returns its index."""
        ...

    def update(self, conversation_id: str, message_id: str, **changes: Any) -> Message:
        """Replace fields of one message; returns it. Raises KeyError for an unknown id."""
        ...

    def truncate_after_last_user(self, conversation_id: str) -> int | None:
        """Drop everything after the last user message (Regenerate); returns how many
        messages are left, or None (and changes nothing) when there is no user message."""
        ...


@dataclass
class _Conversation:
    id: str
    title: str
    messages: list[Message] = field(default_factory=list)


class MemoryStore:
    """A :class:`ConversationStore` in this process's memory (lost when the kernel ends).

    It is written from the kernel's main thread (intents) and from the reply thread (a
    finished reply), so every method takes one lock; readers get copies.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._conversations: dict[str, _Conversation] = {}
        self._numbers = itertools.count(1)

    def create(self, title: str | None = None) -> ConversationInfo:
        with self._lock:
            conv = _Conversation(new_id("c"), title or f"Chat {next(self._numbers)}")
            self._conversations[conv.id] = conv
            return ConversationInfo(conv.id, conv.title, 0)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._conversations)

    def info(self, conversation_id: str) -> ConversationInfo:
        with self._lock:
            conv = self._require(conversation_id)
            return ConversationInfo(conv.id, conv.title, len(conv.messages))

    def infos(self) -> list[ConversationInfo]:
        with self._lock:
            return [
                ConversationInfo(c.id, c.title, len(c.messages))
                for c in self._conversations.values()
            ]

    def messages(
        self, conversation_id: str, start: int = 0, stop: int | None = None
    ) -> list[Message]:
        with self._lock:
            return self._require(conversation_id).messages[start:stop]

    def history(self, conversation_id: str) -> list[dict[str, str]]:
        with self._lock:
            return chat_history(self._require(conversation_id).messages)

    def rename(self, conversation_id: str, title: str) -> None:
        title = title.strip()
        if not title:
            raise ValueError("A conversation title cannot be empty.")
        with self._lock:
            self._require(conversation_id).title = title[:MAX_TITLE_CHARS]

    def delete(self, conversation_id: str) -> None:
        with self._lock:
            self._require(conversation_id)
            del self._conversations[conversation_id]

    def append(self, conversation_id: str, message: Message) -> int:
        with self._lock:
            messages = self._require(conversation_id).messages
            messages.append(message)
            return len(messages) - 1

    def update(self, conversation_id: str, message_id: str, **changes: Any) -> Message:
        with self._lock:
            messages = self._require(conversation_id).messages
            for i in range(len(messages) - 1, -1, -1):  # the newest message, usually
                if messages[i].id == message_id:
                    messages[i] = replace(messages[i], **changes)
                    return messages[i]
        raise KeyError(f"No message {message_id!r} in conversation {conversation_id!r}.")

    def truncate_after_last_user(self, conversation_id: str) -> int | None:
        with self._lock:
            messages = self._require(conversation_id).messages
            for i in range(len(messages) - 1, -1, -1):
                if messages[i].role == "user":
                    del messages[i + 1 :]
                    return i + 1
            return None

    def _require(self, conversation_id: str) -> _Conversation:
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise UnknownConversationError(
                f"No conversation {conversation_id!r}; known: {list(self._conversations)}."
            ) from None
