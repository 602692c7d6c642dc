"""Conversations: message history, titles, and export.

A :class:`ConversationStore` is owned by one widget. It is mutated from the kernel's main
thread (user intents) and from the widget's reply thread (streamed text), so every method
takes the store's lock; readers get copies.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass, field, replace
from typing import Literal

from chatwidget.errors import UnknownConversationError

Role = Literal["user", "assistant", "system"]
Status = Literal["done", "streaming", "stopped", "error"]


@dataclass(frozen=True)
class Message:
    """One chat message. Assistant messages carry the model and usage that produced them."""

    id: str
    role: Role
    content: str
    status: Status = "done"
    model: str | None = None
    new_tokens: int | None = None
    tokens_per_s: float | None = None
    error: str | None = None

    def as_chat(self) -> dict[str, str]:
        """The ``{"role", "content"}`` form chat templates take."""
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    """A titled list of messages."""

    id: str
    title: str
    messages: list[Message] = field(default_factory=list)

    def history(self) -> list[dict[str, str]]:
        """Messages to send to a model: finished or stopped turns, in order."""
        return [m.as_chat() for m in self.messages if m.status != "error" and m.content]

    def to_markdown(self) -> str:
        """Export as Markdown: one heading per turn, model and speed under replies."""
        lines = [f"# {self.title}", ""]
        for m in self.messages:
            who = "You" if m.role == "user" else ("System" if m.role == "system" else "Assistant")
            lines.append(f"**{who}:**")
            lines.append("")
            lines.append(m.content if m.content else "_(empty)_")
            if m.role == "assistant" and m.model:
                meta = [m.model]
                if m.new_tokens is not None:
                    meta.append(f"{m.new_tokens} tokens")
                if m.tokens_per_s:
                    meta.append(f"{m.tokens_per_s:.1f} tok/s")
                if m.status == "stopped":
                    meta.append("stopped")
                lines.append("")
                lines.append(f"<sub>{' · '.join(meta)}</sub>")
            if m.error:
                lines.append("")
                lines.append(f"> Error: {m.error}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def new_id(prefix: str) -> str:
    """A short unique id such as ``c-1f3a9b2c``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class ConversationStore:
    """The conversations of one widget, in creation order."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._conversations: dict[str, Conversation] = {}
        self._numbers = itertools.count(1)

    def create(self, title: str | None = None) -> Conversation:
        with self._lock:
            conv = Conversation(id=new_id("c"), title=title or f"Chat {next(self._numbers)}")
            self._conversations[conv.id] = conv
            return self._copy(conv)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._conversations)

    def get(self, conversation_id: str) -> Conversation:
        with self._lock:
            return self._copy(self._require(conversation_id))

    def all(self) -> list[Conversation]:
        with self._lock:
            return [self._copy(c) for c in self._conversations.values()]

    def rename(self, conversation_id: str, title: str) -> None:
        title = title.strip()
        if not title:
            raise ValueError("A conversation title cannot be empty.")
        with self._lock:
            self._require(conversation_id).title = title[:200]

    def delete(self, conversation_id: str) -> None:
        with self._lock:
            self._require(conversation_id)
            del self._conversations[conversation_id]

    def append(self, conversation_id: str, message: Message) -> None:
        with self._lock:
            self._require(conversation_id).messages.append(message)

    def update(self, conversation_id: str, message_id: str, **changes: object) -> Message:
        """Replace fields of one message; returns the new message."""
        with self._lock:
            conv = self._require(conversation_id)
            for i, m in enumerate(conv.messages):
                if m.id == message_id:
                    conv.messages[i] = replace(m, **changes)  # type: ignore[arg-type]
                    return conv.messages[i]
        raise KeyError(f"No message {message_id!r} in conversation {conversation_id!r}.")

    def append_text(self, conversation_id: str, message_id: str, piece: str) -> None:
        with self._lock:
            conv = self._require(conversation_id)
            for i in range(len(conv.messages) - 1, -1, -1):
                m = conv.messages[i]
                if m.id == message_id:
                    conv.messages[i] = replace(m, content=m.content + piece)
                    return

    def truncate_after_last_user(self, conversation_id: str) -> str | None:
        """Drop everything after the last user message (for Regenerate); return its text."""
        with self._lock:
            conv = self._require(conversation_id)
            for i in range(len(conv.messages) - 1, -1, -1):
                if conv.messages[i].role == "user":
                    del conv.messages[i + 1 :]
                    return conv.messages[i].content
            return None

    def _require(self, conversation_id: str) -> Conversation:
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise UnknownConversationError(
                f"No conversation {conversation_id!r}; known: {list(self._conversations)}."
            ) from None

    @staticmethod
    def _copy(conv: Conversation) -> Conversation:
        return Conversation(id=conv.id, title=conv.title, messages=list(conv.messages))
