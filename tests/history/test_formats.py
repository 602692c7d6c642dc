"""Export and import: JSON (lossless), Markdown, OpenAI lists, and malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatwidget.history import History, ImportFormatError, Usage
from chatwidget.history.formats import FORMAT_VERSION, parse, read


@pytest.fixture
def history() -> History:
    return History.open(False, "ws")


def branched(h: History) -> str:
    """A conversation with a regenerated reply, an edit, usage, an error and an interruption."""
    conv = h.create_conversation("Branches", model="org/a")
    first = h.add_user_message(conv.id, "Q1")
    a1 = h.begin_reply(conv.id, "org/a")
    h.append_text(a1.id, "A1")
    h.finish_reply(a1.id, usage=Usage(5, 1, 0.01, 100.0, 0.02))
    a1b = h.regenerate(a1.id, "org/b")
    h.finish_reply(a1b.id, text="A1, again", status="stopped", usage=Usage(5, 3, None, 30.0, 0.1))
    h.add_user_message(conv.id, "Q2")
    a2 = h.begin_reply(conv.id, "org/b")
    h.finish_reply(a2.id, status="error", error="out of\nmemory")
    h.edit(first.id, "Q1, edited")
    a3 = h.begin_reply(conv.id, "org/a")
    h.append_text(a3.id, "cut off")
    h.finish_reply(a3.id, status="interrupted")
    h.select_version(first.id, 0)  # show the first branch, at its newest leaf (the error)
    return conv.id


def shape(h: History, cid: str) -> list[tuple[Any, ...]]:
    """The tree without ids: each message's fields and its parent's position."""
    messages = h.all_messages(cid)
    position = {m.id: i for i, m in enumerate(messages)}
    return [
        (
            None if m.parent_id is None else position[m.parent_id],
            m.role,
            m.content,
            m.status,
            m.model,
            m.usage,
            m.error,
        )
        for m in messages
    ]


def active(h: History, cid: str) -> list[str]:
    return [m.content for m in h.messages(cid)]


def test_json_export_holds_the_openai_messages_and_the_whole_tree(history: History) -> None:
    cid = branched(history)
    data = history.export_json(cid)
    assert data["messages"] == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1, again"},
        {"role": "user", "content": "Q2"},
    ]
    block = data["chatwidget"]
    assert (block["format"], block["version"]) == ("chatwidget.conversation", FORMAT_VERSION)
    assert (block["title"], block["model"]) == ("Branches", "org/a")
    assert len(block["messages"]) == 7
    reply = next(m for m in block["messages"] if m["content"] == "A1")
    assert reply["model"] == "org/a"
    assert reply["usage"] == {
        "prompt_tokens": 5,
        "new_tokens": 1,
        "time_to_first_token_s": 0.01,
        "tokens_per_s": 100.0,
        "duration_s": 0.02,
    }
    json.dumps(data)  # plain JSON all the way down


def test_json_round_trip_gives_the_same_tree_with_new_ids(history: History) -> None:
    cid = branched(history)
    text = json.dumps(history.export_json(cid))
    imported = history.import_conversation(text)
    assert imported.id != cid
    assert imported.title == "Branches"
    assert imported.model == "org/a"
    assert shape(history, imported.id) == shape(history, cid)
    assert active(history, imported.id) == active(history, cid)
    assert not {m.id for m in history.all_messages(cid)} & {
        m.id for m in history.all_messages(imported.id)
    }
    # The versions shown are the same too, down every branch.
    first = history.messages(imported.id)[0]
    history.select_version(first.id, 1)
    assert active(history, imported.id) == ["Q1, edited", "cut off"]


def test_json_round_trip_through_a_file_and_a_restore(tmp_path: Path) -> None:
    h = History.open(tmp_path / "h.sqlite3", "ws")
    cid = branched(h)
    export = tmp_path / "chat.json"
    export.write_text(json.dumps(h.export_json(cid)), encoding="utf-8")
    imported = h.import_conversation(export)
    h.close()
    h2 = History.open(tmp_path / "h.sqlite3", "ws")
    assert shape(h2, imported.id) == shape(h2, cid)
    assert active(h2, imported.id) == active(h2, cid)
    h2.close()


def test_markdown_export_reads_like_a_chat_and_imports_back(history: History) -> None:
    cid = branched(history)
    text = history.export_markdown(cid)
    assert text.startswith("# Branches\n")
    assert "**You:**\n\nQ1\n\n<sub>version 1 / 2</sub>" in text
    assert "<sub>org/b · 3 tokens · 30.0 tok/s · stopped · version 2 / 2</sub>" in text
    assert "> Error: out of memory" in text
    imported = parse(text)
    assert imported.title == "Branches"
    got = [(m.role, m.content, m.status, m.model, m.new_tokens, m.error) for m in imported.messages]
    assert got == [
        ("user", "Q1", "done", None, None, None),
        ("assistant", "A1, again", "stopped", "org/b", 3, None),
        ("user", "Q2", "done", None, None, None),
        ("assistant", "", "error", "org/b", None, "out of memory"),
    ]


def test_markdown_round_trip_keeps_text_that_looks_like_markers(history: History) -> None:
    tricky = "\n".join(
        [
            "**You:**",
            "\\**Assistant:**",
            "<sub>not meta</sub>",
            "> Error: not an error",
            "_(empty)_",
            "# not a title",
            "plain \\ backslash",
        ]
    )
    conv = history.create_conversation("Tricky")
    history.add_user_message(conv.id, tricky)
    reply = history.begin_reply(conv.id, "org/a")
    history.finish_reply(reply.id, text="_(empty)_")
    imported = history.import_conversation(history.export_markdown(conv.id))
    assert active(history, imported.id) == [tricky, "_(empty)_"]


def test_a_hand_written_markdown_chat_imports() -> None:
    text = "**You:**\nHello\n\n**Assistant:**\n\nHi!\nHow can I help?\n\n<sub>org/a</sub>\n"
    imported = parse(text, title_hint="notes")
    assert imported.title == "Hello"  # no '# title': the start of the first message
    assert [(m.role, m.content, m.model) for m in imported.messages] == [
        ("user", "Hello", None),
        ("assistant", "Hi!\nHow can I help?", "org/a"),
    ]


def test_openai_messages_import_as_a_list_an_object_or_a_file(
    history: History, tmp_path: Path
) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}],
        },
        {"role": "assistant", "content": "4", "name": "bot"},
    ]
    from_list = history.import_conversation(messages)
    assert active(history, from_list.id) == ["Be brief.", "What is 2+2?", "4"]
    assert [m.role for m in history.messages(from_list.id)] == ["system", "user", "assistant"]
    assert from_list.title == "What is 2+2?"
    from_object = history.import_conversation({"messages": messages}, title="Mine")
    assert from_object.title == "Mine"
    path = tmp_path / "openai.json"
    path.write_text(json.dumps(messages), encoding="utf-8")
    from_file = history.import_conversation(str(path))
    assert from_file.title == "What is 2+2?"
    assert len(history.conversations()) == 3


def tree_export(**changes: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "format": "chatwidget.conversation",
        "version": 1,
        "title": "t",
        "messages": [
            {"id": "a", "parent_id": None, "role": "user", "content": "hi"},
            {"id": "b", "parent_id": "a", "role": "assistant", "content": "yo"},
        ],
    }
    block.update(changes)
    return {"messages": [], "chatwidget": block}


def with_message(i: int, **changes: Any) -> dict[str, Any]:
    data = tree_export()
    data["chatwidget"]["messages"][i].update(changes)
    return data


@pytest.mark.parametrize(
    ("source", "where", "says"),
    [
        ('{"messages": [', "", "not valid JSON (line 1, column 15"),
        (
            [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],
            "messages[1].role",
            "'robot'",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].role", "tool calls are not imported"),
        ([{"role": "user"}], "messages[0].content", "is missing"),
        (
            [{"role": "user", "content": [{"type": "image_url"}]}],
            "messages[0].content[0]",
            "only text parts",
        ),
        ([], "messages", "empty"),
        ({"messages": "hi"}, "messages", "expected a list of messages, not text"),
        ({"foo": 1}, "", "found keys ['foo']"),
        (["hi"], "messages[0]", "expected an object"),
        (
            with_message(1, parent_id="zz"),
            "chatwidget.messages[1].parent_id",
            "not the id of an earlier message",
        ),
        (with_message(1, id="a"), "chatwidget.messages[1].id", "used by an earlier message"),
        (with_message(0, role="bot"), "chatwidget.messages[0].role", "'bot'"),
        (with_message(0, status="weird"), "chatwidget.messages[0].status", "'weird'"),
        (
            with_message(1, usage={"new_tokens": "many"}),
            "chatwidget.messages[1].usage.new_tokens",
            "a number",
        ),
        (
            with_message(1, usage={"new_tokens": 1.5}),
            "chatwidget.messages[1].usage.new_tokens",
            "a count",
        ),
        (with_message(0, active_child="a"), "chatwidget.messages[0].active_child", "not a child"),
        (
            with_message(0, content=None),
            "chatwidget.messages[0].content",
            "expected text, not null",
        ),
        (tree_export(version=FORMAT_VERSION + 1), "chatwidget.version", "Update chatwidget"),
        (tree_export(format="other"), "chatwidget.format", "expected 'chatwidget.conversation'"),
        (tree_export(messages=[]), "chatwidget.messages", "no messages"),
        (tree_export(root_choice="b"), "chatwidget.root_choice", "not the id of a first message"),
        ("Just some text.\n\nNo markers.", "line 1", "expected a '# title'"),
        ("# Title only\n", "", "no messages found"),
    ],
)
def test_a_malformed_import_says_what_is_wrong_and_imports_nothing(
    history: History, source: Any, where: str, says: str
) -> None:
    with pytest.raises(ImportFormatError) as info:
        history.import_conversation(source)
    assert info.value.where == where
    assert says in str(info.value)
    assert str(info.value).startswith("Cannot import this conversation")
    assert isinstance(info.value, ValueError)
    assert history.conversations() == []


def test_a_file_without_a_title_or_user_text_is_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "greeting.md"
    path.write_text("**Assistant:**\n\nHello!\n", encoding="utf-8")
    assert read(path).title == "greeting"


def test_read_refuses_missing_files_and_non_utf8_bytes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No file"):
        read(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="No file"):
        read("nope.json")
    with pytest.raises(ImportFormatError, match="not UTF-8"):
        read(b"\xff\xfe\x00garbage")


def test_a_streaming_reply_imports_as_interrupted() -> None:
    data = with_message(1, status="streaming")
    imported = parse(data)
    assert imported.messages[1].status == "interrupted"
