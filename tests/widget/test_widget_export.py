"""Export and import through the widget: Python files and the front end's messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from chatwidget.history.errors import ImportFormatError
from chatwidget.testing.models import DEMO_TINY_REPO
from chatwidget.widget import ChatWidget
from tests.widget.frontend import FrontEnd

TINY = DEMO_TINY_REPO


@pytest.fixture
def chat(make_chat: Callable[..., ChatWidget]) -> ChatWidget:
    chat = make_chat()
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    chat.rename_conversation(chat.conversation_id, "Trip plans")
    chat.send("Where should I go?").wait(120)
    chat.regenerate().wait(120)
    chat.send("And <b>when</b>?").wait(120)
    assert chat.wait_until_idle(60)
    return chat


def test_json_export_holds_the_branch_the_tree_and_usage(chat: ChatWidget, tmp_path: Path) -> None:
    data = chat.export_conversation(tmp_path / "trip.json")
    on_disk = json.loads((tmp_path / "trip.json").read_text("utf-8"))
    assert on_disk == data
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    tree = data["chatwidget"]
    assert tree["title"] == "Trip plans"
    replies = [m for m in tree["messages"] if m["role"] == "assistant"]
    assert len(replies) == 3  # the regenerated reply's first version is kept
    assert all(r["model"] == TINY for r in replies)
    assert all(r["usage"]["new_tokens"] and r["usage"]["prompt_tokens"] for r in replies)

    imported = chat.import_conversation(tmp_path / "trip.json")
    assert chat.conversation_id == imported
    assert [(m["role"], m["content"]) for m in chat.messages] == [
        (m["role"], m["content"]) for m in data["messages"]
    ]
    assert chat.messages[1]["versions"] == 2
    assert chat.session.conversations()[-1].title == "Trip plans"


def test_markdown_export_round_trips(chat: ChatWidget, tmp_path: Path) -> None:
    original = [(m["role"], m["content"]) for m in chat.messages]
    chat.export_conversation(tmp_path / "trip.md")
    text = (tmp_path / "trip.md").read_text("utf-8")
    assert text.startswith("# Trip plans")
    assert "And <b>when</b>?" in text
    assert text == chat.export_markdown()
    chat.import_conversation(tmp_path / "trip.md")
    assert [(m["role"], m["content"]) for m in chat.messages] == original


def test_a_malformed_import_is_refused_and_changes_nothing(
    chat: ChatWidget, tmp_path: Path
) -> None:
    before = [c.id for c in chat.session.conversations()]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}), "utf-8")
    with pytest.raises(ImportFormatError, match=r"messages\[0\]"):
        chat.import_conversation(bad)
    with pytest.raises(FileNotFoundError, match="check the path"):
        chat.import_conversation(tmp_path / "missing.json")
    assert [c.id for c in chat.session.conversations()] == before


def test_front_end_export_and_import(chat: ChatWidget) -> None:
    front = FrontEnd(chat)
    cid = chat.conversation_id
    md = front.request("export", conversation_id=cid, format="markdown")
    assert md["ok"], md
    assert md["file"]["filename"] == "Trip-plans.md"
    assert md["file"]["mime"] == "text/markdown"
    assert md["file"]["text"] == chat.export_markdown()
    js = front.request("export", conversation_id=cid, format="json")
    assert js["file"]["filename"] == "Trip-plans.json"
    assert json.loads(js["file"]["text"]) == chat.export_conversation()
    wrong = front.request("export", conversation_id=cid, format="pdf")
    assert not wrong["ok"]
    assert "markdown" in wrong["error"]

    before = len(chat.session.conversations())
    imported = front.request("import_conversation", text=js["file"]["text"])
    assert imported["ok"], imported
    assert len(chat.session.conversations()) == before + 1
    assert chat.conversation_id != cid
    refused = front.request("import_conversation", text="{not json")
    assert not refused["ok"]
    assert "JSON" in refused["error"]
    # Text from the front end is content, never a path the kernel would read.
    as_path = front.request("import_conversation", text="/etc/passwd")
    assert not as_path["ok"]
    assert len(chat.session.conversations()) == before + 1


def test_an_import_goes_on_with_the_model_in_use(chat: ChatWidget) -> None:
    data = chat.export_conversation()
    data["chatwidget"]["model"] = "someone/huge-model"  # a file never triggers a download
    chat.import_conversation(data)
    assert chat.requested_model == TINY
    assert chat.active_model == TINY
    assert chat.session.conversations()[-1].model == TINY
    assert "someone/huge-model" not in chat.session.download_order
