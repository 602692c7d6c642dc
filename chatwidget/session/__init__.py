"""The session: conversations with their intent, replies and settings, with no widget in it.

- :mod:`~chatwidget.session.session`: ``Session``, what the Python API does.
- :mod:`~chatwidget.session.store`: ``ConversationStore``, the one interface every read and
  write of a conversation goes through, and ``MemoryStore``, its in-memory form.
- :mod:`~chatwidget.session.deltas`: ``DeltaStream``, the one place streamed text goes.
- :mod:`~chatwidget.session.messages`: ``Message`` and friends, Markdown export.
- :mod:`~chatwidget.session.settings`: validation of settings changes (bounds, defaults).
- :mod:`~chatwidget.session.reply`: ``ReplyHandle``, what ``send`` returns.
"""

from __future__ import annotations

from chatwidget.session.deltas import Delta, DeltaStream
from chatwidget.session.messages import ConversationInfo, Message
from chatwidget.session.reply import ReplyHandle
from chatwidget.session.session import PARTS, Part, Session, Window
from chatwidget.session.store import ConversationStore, MemoryStore

__all__ = [
    "PARTS",
    "ConversationInfo",
    "ConversationStore",
    "Delta",
    "DeltaStream",
    "MemoryStore",
    "Message",
    "Part",
    "ReplyHandle",
    "Session",
    "Window",
]
