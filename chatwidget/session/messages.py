"""Value types of a conversation: messages, conversation info, ids, and Markdown export."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant", "system"]
Status = Literal["done", "streaming", "stopped", "error", "interrupted"]


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
    version: int = 0
    """Which of its versions (siblings: regenerated replies, edited messages) this is, from 0."""
    versions: int = 1
    """How many versions the message has."""

    def as_chat(self) -> dict[str, str]:
        """The ``{"role", "content"}`` form chat templates take."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ConversationInfo:
    """A conversation without its messages: id, title, how many messages its active branch
    has, and the model last asked for in it (remembered across restarts)."""

    id: str
    title: str
    count: int
    model: str | None = None


def new_id(prefix: str) -> str:
    """A unique id such as ``m-1f3a9b2c04d5e6f7`` (64 random bits: unique across the
    processes that share one history file)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def chat_history(messages: Iterable[Message]) -> list[dict[str, str]]:
    """Messages to send to a model: finished or stopped turns with text, in order."""
    return [m.as_chat() for m in messages if m.status != "error" and m.content]


def to_markdown(title: str, messages: Iterable[Message]) -> str:
    """A conversation as Markdown: one heading per turn, model and speed under replies."""
    lines = [f"# {title}", ""]
    for m in messages:
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
            if m.status in ("stopped", "interrupted"):
                meta.append(m.status)
            lines.append("")
            lines.append(f"<sub>{' · '.join(meta)}</sub>")
        if m.error:
            lines.append("")
            lines.append(f"> Error: {m.error}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
