"""MemoryStore (the in-memory ConversationStore) and Markdown export."""

from __future__ import annotations

import pytest

from chatwidget.errors import UnknownConversationError
from chatwidget.session.messages import Message, to_markdown
from chatwidget.session.store import ConversationStore, MemoryStore


def test_memory_store_is_a_conversation_store() -> None:
    store: ConversationStore = MemoryStore()  # mypy checks the protocol here
    assert store.ids() == []


def test_history_skips_failed_and_empty_messages() -> None:
    store = MemoryStore()
    conv = store.create()
    store.append(conv.id, Message("m1", "user", "hi"))
    store.append(conv.id, Message("m2", "assistant", "", status="error", error="boom"))
    store.append(conv.id, Message("m3", "user", "again"))
    store.append(conv.id, Message("m4", "assistant", "partial", status="stopped"))
    assert store.history(conv.id) == [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "partial"},
    ]


def test_messages_are_addressed_by_index_and_sliced_without_the_rest() -> None:
    store = MemoryStore()
    conv = store.create()
    indices = [store.append(conv.id, Message(f"m{i}", "user", str(i))) for i in range(25)]
    assert indices == list(range(25))
    assert store.info(conv.id).count == 25
    assert [m.id for m in store.messages(conv.id, 20)] == [f"m{i}" for i in range(20, 25)]
    assert [m.id for m in store.messages(conv.id, 3, 5)] == ["m3", "m4"]


def test_update_replaces_fields_of_one_message() -> None:
    store = MemoryStore()
    conv = store.create()
    store.append(conv.id, Message("a", "assistant", "", status="streaming"))
    done = store.update(conv.id, "a", content="Hello!", status="done")
    assert done.content == "Hello!"
    assert store.messages(conv.id) == [done]
    with pytest.raises(KeyError, match="No message 'nope'"):
        store.update(conv.id, "nope", content="x")


def test_truncate_after_last_user_for_regenerate() -> None:
    store = MemoryStore()
    conv = store.create()
    store.append(conv.id, Message("u", "user", "q"))
    store.append(conv.id, Message("a", "assistant", "answer"))
    assert store.truncate_after_last_user(conv.id) == 1
    assert [m.id for m in store.messages(conv.id)] == ["u"]
    empty = store.create()
    assert store.truncate_after_last_user(empty.id) is None


def test_unknown_conversation_is_a_clear_key_error() -> None:
    store = MemoryStore()
    with pytest.raises(KeyError, match="No conversation 'nope'"):
        store.info("nope")
    with pytest.raises(UnknownConversationError):
        store.rename("nope", "x")


def test_rename_rejects_empty_title_and_keeps_old() -> None:
    store = MemoryStore()
    conv = store.create("First")
    with pytest.raises(ValueError, match="empty"):
        store.rename(conv.id, "   ")
    assert store.info(conv.id).title == "First"


def test_markdown_export_has_turns_and_model() -> None:
    messages = [
        Message("u", "user", "Hello"),
        Message("a", "assistant", "Hi there", model="org/m", new_tokens=3, tokens_per_s=12.5),
    ]
    md = to_markdown("Demo", messages)
    assert md.startswith("# Demo\n")
    assert "**You:**\n\nHello" in md
    assert "**Assistant:**\n\nHi there" in md
    assert "org/m · 3 tokens · 12.5 tok/s" in md


def test_readers_get_copies() -> None:
    store = MemoryStore()
    conv = store.create()
    copy = store.messages(conv.id)
    copy.append(Message("x", "user", "sneaky"))
    assert store.messages(conv.id) == []
