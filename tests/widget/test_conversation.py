"""ConversationStore and export."""

from __future__ import annotations

import pytest

from chatwidget.errors import UnknownConversationError
from chatwidget.widget.conversation import ConversationStore, Message


def test_history_skips_failed_and_empty_messages() -> None:
    store = ConversationStore()
    conv = store.create()
    store.append(conv.id, Message("m1", "user", "hi"))
    store.append(conv.id, Message("m2", "assistant", "", status="error", error="boom"))
    store.append(conv.id, Message("m3", "user", "again"))
    store.append(conv.id, Message("m4", "assistant", "partial", status="stopped"))
    assert store.get(conv.id).history() == [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "partial"},
    ]


def test_streamed_text_appends_to_the_right_message() -> None:
    store = ConversationStore()
    conv = store.create()
    store.append(conv.id, Message("a", "assistant", "", status="streaming"))
    for piece in ["Hel", "lo", "!"]:
        store.append_text(conv.id, "a", piece)
    assert store.get(conv.id).messages[0].content == "Hello!"


def test_truncate_after_last_user_for_regenerate() -> None:
    store = ConversationStore()
    conv = store.create()
    store.append(conv.id, Message("u", "user", "q"))
    store.append(conv.id, Message("a", "assistant", "answer"))
    assert store.truncate_after_last_user(conv.id) == "q"
    assert [m.id for m in store.get(conv.id).messages] == ["u"]


def test_unknown_conversation_is_a_clear_key_error() -> None:
    store = ConversationStore()
    with pytest.raises(KeyError, match="No conversation 'nope'"):
        store.get("nope")
    with pytest.raises(UnknownConversationError):
        store.rename("nope", "x")


def test_rename_rejects_empty_title_and_keeps_old() -> None:
    store = ConversationStore()
    conv = store.create("First")
    with pytest.raises(ValueError, match="empty"):
        store.rename(conv.id, "   ")
    assert store.get(conv.id).title == "First"


def test_markdown_export_has_turns_and_model() -> None:
    store = ConversationStore()
    conv = store.create("Demo")
    store.append(conv.id, Message("u", "user", "Hello"))
    store.append(
        conv.id,
        Message("a", "assistant", "Hi there", model="org/m", new_tokens=3, tokens_per_s=12.5),
    )
    md = store.get(conv.id).to_markdown()
    assert md.startswith("# Demo\n")
    assert "**You:**\n\nHello" in md
    assert "**Assistant:**\n\nHi there" in md
    assert "org/m · 3 tokens · 12.5 tok/s" in md


def test_readers_get_copies() -> None:
    store = ConversationStore()
    conv = store.create()
    copy = store.get(conv.id)
    copy.messages.append(Message("x", "user", "sneaky"))
    assert store.get(conv.id).messages == []
