"""The conversation tree: branches, versions, select_version and the active branch."""

from __future__ import annotations

import pytest

from chatwidget.history import ConversationTree, InvalidVersionError, Message, UnknownMessageError


def msg(mid: str, parent: str | None, role: str = "user", content: str = "") -> Message:
    return Message(mid, parent, role, content or mid)  # type: ignore[arg-type]


def contents(tree: ConversationTree) -> list[str]:
    return [m.content for m in tree.path()]


def linear(*ids: str) -> ConversationTree:
    """u1 -> a1 -> u2 -> a2 ...: roles alternate from user."""
    tree = ConversationTree()
    parent = None
    for i, mid in enumerate(ids):
        tree.add(msg(mid, parent, "user" if i % 2 == 0 else "assistant"))
        parent = mid
    return tree


def test_appending_under_the_head_extends_the_active_branch_in_place() -> None:
    tree = linear("u1", "a1")
    branch = tree._path
    assert tree.add(msg("u2", "a1")) == []  # an only child: nothing to remember
    assert tree._path is branch  # the cached branch grew; nothing was rebuilt
    assert contents(tree) == ["u1", "a1", "u2"]
    assert tree.head_id == "u2"
    assert tree.depth() == 3


def test_regenerate_adds_a_sibling_reply_and_keeps_the_old_one() -> None:
    tree = linear("u1", "a1")
    assert tree.add(msg("a1b", "u1", "assistant")) == [("u1", "a1b")]
    assert contents(tree) == ["u1", "a1b"]
    versions = tree.versions("a1b")
    assert versions.ids == ("a1", "a1b")
    assert versions.index == 1
    assert versions.label == "2 / 2"
    assert tree.versions("a1").label == "2 / 2"  # asked through any sibling, same answer
    assert tree.select_version("a1b", 0) == [("u1", "a1")]
    assert contents(tree) == ["u1", "a1"]
    assert tree.versions("a1").label == "1 / 2"


def test_editing_a_user_message_starts_a_branch_and_the_old_one_stays_reachable() -> None:
    tree = linear("u1", "a1", "u2", "a2")
    tree.add(msg("u2b", "a1"))  # edit u2
    tree.add(msg("a2b", "u2b", "assistant"))
    assert contents(tree) == ["u1", "a1", "u2b", "a2b"]
    assert tree.versions("u2").label == "2 / 2"
    tree.select_version("u2b", 0)
    assert contents(tree) == ["u1", "a1", "u2", "a2"]  # the old branch, down to its leaf


def test_editing_the_first_message_makes_root_versions() -> None:
    tree = linear("u1", "a1")
    tree.add(msg("u1b", None))
    assert contents(tree) == ["u1b"]
    assert tree.versions("u1").ids == ("u1", "u1b")
    assert tree.root_choice == "u1b"
    tree.select_version("u1", 0)
    assert contents(tree) == ["u1", "a1"]
    assert tree.root_choice == "u1"


def test_select_version_goes_to_the_leaf_last_shown_in_that_subtree() -> None:
    tree = linear("u1", "a1", "u2", "a2", "u3", "a3")
    tree.add(msg("a2b", "u2", "assistant"))  # regenerate a2: head a2b
    tree.select_version("a2b", 0)  # back to a2: head is a3, the leaf shown there
    assert tree.head_id == "a3"
    tree.add(msg("a1b", "u1", "assistant"))  # regenerate a1: a new leaf
    assert tree.head_id == "a1b"
    tree.select_version("a1b", 0)  # back into a1's subtree: where the user was, a3
    assert tree.head_id == "a3"
    tree.select_version("a2", 1)  # now show a2b inside it
    tree.select_version("a1", 1)  # away to a1b ...
    tree.select_version("a1", 0)  # ... and back: the leaf last shown is a2b now
    assert tree.head_id == "a2b"
    assert contents(tree) == ["u1", "a1", "u2", "a2b"]


def restored(tree: ConversationTree) -> ConversationTree:
    """The tree as a store rebuilds it: messages, choices at branch points, root choice."""
    return ConversationTree.from_messages(tree.messages(), tree.choices(), tree.root_choice)


def test_acting_on_a_message_off_the_active_branch_moves_every_choice_above_it() -> None:
    tree = linear("u1", "a1", "u2", "a2")
    tree.add(msg("a1b", "u1", "assistant"))  # head a1b: u2 and a2 are off the branch now
    tree.add(msg("a2b", "u2", "assistant"))  # a reply on that other branch ...
    assert contents(tree) == ["u1", "a1", "u2", "a2b"]  # ... brings it back
    assert tree.versions("a1").index == 0
    assert restored(tree).path() == tree.path()
    tree.select_version("a1", 1)  # head a1b again
    changed = tree.select_version("a2", 0)  # a version on the branch not shown
    assert changed == [("u1", "a1"), ("u2", "a2")]
    assert contents(tree) == ["u1", "a1", "u2", "a2"]
    assert tree.versions("a1b").label == "1 / 2"
    assert restored(tree).path() == tree.path()


def test_a_subtree_without_a_remembered_choice_opens_at_its_newest_leaf() -> None:
    # An imported tree, say: no choices at all. u1 has replies a (older) and b (newer);
    # a has two follow-ups; the newest leaf of a's subtree is a-u2.
    messages = [
        msg("u1", None),
        msg("a", "u1", "assistant"),
        msg("a-u1", "a"),
        msg("b", "u1", "assistant"),
        msg("a-u2", "a"),
    ]
    tree = ConversationTree.from_messages(messages)
    assert contents(tree) == ["u1", "a", "a-u2"]  # the newest leaf of all
    assert tree.versions("b").index == 0  # a is the reply shown
    tree.select_version("a", 1)
    assert contents(tree) == ["u1", "b"]
    tree.select_version("b", 0)
    assert tree.head_id == "a-u2"


def test_from_messages_restores_choices_and_drops_orphans_and_stale_choices() -> None:
    tree = linear("u1", "a1")
    tree.add(msg("a1b", "u1", "assistant"))
    tree.select_version("a1b", 0)
    messages = [*tree.messages(), msg("orphan", "nowhere"), msg("orphan-child", "orphan")]
    choices = {**tree.choices(), "a1b": "u1", "missing": "a1"}
    restored = ConversationTree.from_messages(messages, choices, tree.root_choice)
    assert contents(restored) == ["u1", "a1"]
    assert len(restored) == 3
    assert "orphan" not in restored
    assert restored.choices() == {"u1": "a1"}


def test_streamed_pieces_are_joined_when_read() -> None:
    tree = linear("u1")
    tree.add(Message("r", "u1", "assistant", "", "streaming"))
    for i in range(100):
        tree.append_text("r", f"{i},")
    assert tree.get("r").content == "".join(f"{i}," for i in range(100))
    tree.append_text("r", "end")
    assert tree.head is not None
    assert tree.head.content.endswith("99,end")
    done = tree.update("r", status="done", content="final")
    assert done.content == "final"
    assert done.status == "done"
    tree.append_text("r", "!")
    assert tree.get("r").content == "final!"


def test_chat_messages_leave_out_streaming_failed_and_empty_replies() -> None:
    tree = ConversationTree()
    tree.add(Message("u1", None, "user", "hi"))
    tree.add(Message("a1", "u1", "assistant", "partial", "stopped"))
    tree.add(Message("u2", "a1", "user", "again"))
    tree.add(Message("a2", "u2", "assistant", "oops", "error", error="boom"))
    tree.add(Message("u3", "a2", "user", "and again"))
    tree.add(Message("a3", "u3", "assistant", "cut", "interrupted"))
    tree.add(Message("u4", "a3", "user", ""))
    tree.add(Message("a4", "u4", "assistant", "", "streaming"))
    assert tree.chat_messages() == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "partial"},
        {"role": "user", "content": "again"},
        {"role": "user", "content": "and again"},
        {"role": "assistant", "content": "cut"},
    ]


def test_chat_messages_reuse_their_dicts_until_a_message_changes() -> None:
    tree = ConversationTree()
    tree.add(Message("u1", None, "user", "hi"))
    tree.add(Message("a1", "u1", "assistant", "", "streaming"))
    first = tree.chat_messages()
    assert first == [{"role": "user", "content": "hi"}]
    again = tree.chat_messages()
    assert again is not first  # a new list...
    assert again[0] is first[0]  # ...of the same dicts
    tree.append_text("a1", "Hel")
    tree.append_text("a1", "lo")
    assert tree.chat_messages() == [{"role": "user", "content": "hi"}]  # still streaming
    tree.update("a1", status="done")
    done = tree.chat_messages()
    assert done == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]
    tree.update("a1", content="Hello!")
    assert tree.chat_messages()[1] == {"role": "assistant", "content": "Hello!"}
    assert done[1] == {"role": "assistant", "content": "Hello"}  # an earlier answer stays as it was
    assert tree.chat_messages(stop=1) == [{"role": "user", "content": "hi"}]


def reference_chat(tree: ConversationTree, stop: int | None = None) -> list[dict[str, str]]:
    """chat_messages() computed from scratch, from the active branch."""
    return [
        {"role": m.role, "content": m.content}
        for m in tree.path()[:stop]
        if m.content and m.status not in ("error", "streaming")
    ]


def test_chat_messages_follow_every_change_of_the_tree() -> None:
    """The chat list the tree keeps between calls equals a fresh computation after each
    add under the head or under an earlier message (Regenerate, Edit), streamed piece,
    update and version switch, for every ``stop``."""
    import random

    rng = random.Random(7)
    tree = ConversationTree()
    made = 0
    for step in range(600):
        path = tree.path()
        action = rng.random()
        if not path or action < 0.35:  # under the head
            parent = path[-1].id if path else None
        elif action < 0.55:  # under an earlier message of the branch, or a new root
            parent = rng.choice([None, *[m.id for m in path]])
        else:
            parent = "-"
        if parent != "-":
            made += 1
            role = "user" if made % 2 else "assistant"
            status = rng.choice(["done", "done", "streaming", "error", "stopped"])
            text = rng.choice(["", f"text {made}"])
            tree.add(Message(f"m{made}", parent, role, text, status))  # type: ignore[arg-type]
        elif action < 0.7:
            target = rng.choice(path)
            tree.append_text(target.id, f" +{step}")
        elif action < 0.85:
            target = rng.choice(path)
            tree.update(target.id, status=rng.choice(["done", "error", "streaming"]))
        else:
            target = rng.choice(path)
            count = tree.versions(target.id).count
            tree.select_version(target.id, rng.randrange(count))
        if step % 3 == 0:
            tree.chat_messages()  # keep the list warm between changes, as turns do
        depth = tree.depth()
        for stop in {None, 0, depth, max(depth - 1, 0), rng.randrange(depth + 2)}:
            assert tree.chat_messages(stop) == reference_chat(tree, stop), (step, stop)


def test_bad_ids_and_indexes_get_clear_errors() -> None:
    tree = linear("u1", "a1")
    with pytest.raises(UnknownMessageError, match="No message 'nope'") as info:
        tree.versions("nope")
    assert isinstance(info.value, KeyError)
    with pytest.raises(InvalidVersionError, match="has 1 version") as bad:
        tree.select_version("a1", 1)
    assert isinstance(bad.value, IndexError)
    with pytest.raises(ValueError, match="already in this conversation"):
        tree.add(msg("a1", "u1"))
    with pytest.raises(UnknownMessageError):
        tree.add(msg("x", "nope"))
    with pytest.raises(ValueError, match="cannot change"):
        tree.update("a1", parent_id=None)


def test_an_empty_tree() -> None:
    tree = ConversationTree()
    assert tree.path() == []
    assert tree.head is None
    assert tree.chat_messages() == []
    assert ConversationTree.from_messages([]).head is None
