"""Long conversations for tests, demos and benchmarks, without generating every turn.

:func:`seed_conversation` gives a widget's (or session's) active conversation ``n``
finished messages, alternating user and assistant, as an import would; the front end then
shows them like any other.
"""

from __future__ import annotations

from typing import Any

from chatwidget.session import Message, Session
from chatwidget.session.messages import new_id

#: A sentence the tiny models' tokenizer knows well (about a dozen tokens).
SENTENCE = "the quick brown fox jumps over the lazy dog"


def seed_conversation(chat: Any, n: int, *, words: int = 9, model: str | None = None) -> None:
    """Append ``n`` finished messages to the active conversation of ``chat`` (a
    :class:`~chatwidget.ChatWidget` or a :class:`~chatwidget.session.Session`)."""
    session: Session = chat if isinstance(chat, Session) else chat.session
    cid = session.conversation_id
    base = (SENTENCE.split() * (words // 9 + 1))[:words]
    for i in range(n):
        user = i % 2 == 0
        text = f"{'question' if user else 'answer'} {i}: {' '.join(base)}"
        message = Message(
            new_id("m"),
            "user" if user else "assistant",
            text,
            model=None if user else model,
        )
        session.store.append(cid, message)
    session._changed("transcript", "conversations")
