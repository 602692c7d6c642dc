"""Branches on the real path: regenerate keeps versions, edit starts a branch, the pager's
intents, and the transcript's epoch when the visible branch changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatwidget.history.errors import InvalidVersionError
from chatwidget.testing.models import DEMO_TINY_REPO
from chatwidget.widget import ChatWidget
from tests.widget.frontend import FrontEnd

TINY = DEMO_TINY_REPO


def ready(make_chat: Callable[..., ChatWidget], **kwargs: object) -> ChatWidget:
    chat = make_chat(**kwargs)
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    return chat


def test_regenerate_keeps_each_reply_as_a_version(make_chat: Callable[..., ChatWidget]) -> None:
    chat = ready(make_chat)
    first = chat.send("Hello there")
    first.wait(120)
    second = chat.regenerate()
    second.wait(120)
    third = chat.regenerate()
    third.wait(120)
    assert chat.wait_until_idle(60)

    rows = chat.messages
    assert [r["role"] for r in rows] == ["user", "assistant"]  # the active branch only
    assert rows[1]["id"] == third.message_id
    assert (rows[1]["version"], rows[1]["versions"]) == (2, 3)
    versions = chat.versions(third.message_id)
    assert versions.ids == (first.message_id, second.message_id, third.message_id)
    assert versions.label == "3 / 3"

    epoch = chat.session.epoch(chat.conversation_id)
    chat.select_version(third.message_id, 0)
    assert chat.messages[1]["id"] == first.message_id
    assert chat.messages[1]["content"] == first.wait(1)
    assert chat.versions(first.message_id).label == "1 / 3"
    assert chat.session.epoch(chat.conversation_id) == epoch + 1  # readers refetch pages
    assert chat.wait_until_idle(30)
    assert chat.transcript["epoch"] == epoch + 1
    assert [m["id"] for m in chat.transcript["messages"]][-1] == first.message_id

    # The model sees only the branch shown: a regenerate now adds a fourth sibling.
    fourth = chat.regenerate()
    fourth.wait(120)
    assert chat.versions(fourth.message_id).ids[-1] == fourth.message_id
    assert chat.versions(fourth.message_id).count == 4
    with pytest.raises(InvalidVersionError, match="4 version"):
        chat.select_version(fourth.message_id, 9)


def test_edit_starts_a_branch_and_the_old_one_stays_reachable(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = ready(make_chat)
    chat.send("First question").wait(120)
    chat.send("Second question").wait(120)
    assert chat.wait_until_idle(60)
    before = chat.messages
    asked = before[2]
    assert asked["content"] == "Second question"

    handle = chat.edit(asked["id"], "Second question, edited")
    handle.wait(120)
    assert chat.wait_until_idle(60)
    after = chat.messages
    assert [m["content"] for m in after[:3]] == [
        "First question",
        before[1]["content"],
        "Second question, edited",
    ]
    assert after[3]["id"] == handle.message_id
    edited = chat.versions(after[2]["id"])
    assert edited.ids == (asked["id"], after[2]["id"])
    assert edited.index == 1
    assert (after[2]["version"], after[2]["versions"]) == (1, 2)
    # The model answered the edited question only.
    assert chat.export_messages()[-2] == {"role": "user", "content": "Second question, edited"}

    chat.select_version(after[2]["id"], 0)  # back to the old branch, its reply included
    assert [m["id"] for m in chat.messages] == [m["id"] for m in before]

    with pytest.raises(ValueError, match="Only your own messages"):
        chat.edit(before[1]["id"], "not mine")
    with pytest.raises(ValueError, match="cannot be empty"):
        chat.edit(asked["id"], "   ")
    with pytest.raises(KeyError):
        chat.edit("m-unknown", "text")


def test_the_pager_and_edit_through_front_end_messages(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = ready(make_chat)
    front = FrontEnd(chat)
    chat.send("Hi").wait(120)
    chat.regenerate().wait(120)
    assert chat.wait_until_idle(60)
    reply = chat.messages[1]
    assert reply["versions"] == 2

    answer = front.request("select_version", message_id=reply["id"], index=0)
    assert answer["ok"], answer
    assert chat.messages[1]["version"] == 0
    bad = front.request("select_version", message_id=reply["id"], index=5)
    assert not bad["ok"]
    assert "version" in bad["error"]

    user = chat.messages[0]
    edited = front.request("edit", message_id=user["id"], text="Hi again")
    assert edited["ok"], edited
    assert chat.wait_until_idle(120)
    rows = chat.messages
    assert rows[0]["content"] == "Hi again"
    assert rows[0]["versions"] == 2
    assert rows[1]["status"] == "done"
    # The resync snapshot shows the same branch, with the pager's fields.
    state = front.request("resync")["state"]
    shown = state["transcript"]["messages"]
    assert [m["id"] for m in shown] == [r["id"] for r in rows]
    assert shown[0]["version"] == 1
    assert shown[0]["versions"] == 2

    refused = front.request("edit", message_id=rows[1]["id"], text="x")
    assert not refused["ok"]
    assert "regenerate a reply instead" in refused["error"]


def test_branches_work_in_memory_too(make_chat: Callable[..., ChatWidget]) -> None:
    chat = ready(make_chat, history=False)
    assert chat.history.path is None
    assert chat.storage["path"] is None
    chat.send("Hello").wait(120)
    chat.regenerate().wait(120)
    assert chat.versions(chat.messages[1]["id"]).count == 2
