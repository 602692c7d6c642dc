"""The conversation tree: messages with parents, sibling versions and one active branch.

Regenerating a reply adds a sibling reply (same parent); editing a user message adds a
sibling user message, which starts a new branch from that point. Every node with children
remembers the child that was shown last (its *choice*), so the active branch is the chain of
choices from the root choice down to a leaf, the *head*. Only choices at branch points (two
or more children) carry information; a node with one child shows that child, and a branch
point without a remembered choice shows the child that holds the newest leaf.

- :meth:`ConversationTree.add` puts a message under its parent and makes it the head.
  Adding under the head appends to the cached active branch: O(1); adding under another
  message of the active branch (Regenerate, Edit) cuts the branch there: O(messages cut).
- :meth:`ConversationTree.append_text` adds a streamed piece to a message: O(1) (pieces are
  joined when the text is read).
- :meth:`ConversationTree.path` returns the active branch: O(turns), no copying of texts.
- :meth:`ConversationTree.versions` gives a message's siblings and which one is shown;
  :meth:`ConversationTree.select_version` shows another sibling and moves the head into its
  subtree: to the leaf shown there last, else to its newest leaf.

A tree is plain data and not thread-safe: its owner (:class:`~chatwidget.history.History`)
holds a lock around every call.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from chatwidget.history.errors import InvalidVersionError, UnknownMessageError
from chatwidget.history.types import Message, Versions

log = logging.getLogger("chatwidget.history")


class _Node:
    __slots__ = (
        "chat",
        "chat_of",
        "children",
        "choice",
        "depth",
        "dirty",
        "msg",
        "parent",
        "pieces",
        "seq",
    )

    def __init__(self, msg: Message, parent: _Node | None, seq: int) -> None:
        self.msg = msg
        self.parent = parent
        self.children: list[_Node] = []
        self.choice: _Node | None = None  # the child shown last
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.seq = seq  # creation order within the tree
        self.pieces: list[str] | None = None  # streamed text not yet joined into msg.content
        self.dirty = False
        self.chat: dict[str, str] | None = None  # chat_entry()'s answer for ``chat_of``
        self.chat_of: Message | None = None

    def chat_entry(self) -> dict[str, str] | None:
        """``{"role", "content"}`` for a chat template, or None for a message left out (a
        reply streaming or failed, an empty message). Cached until the message changes, so
        building a prompt from a long branch makes no dict per message per turn."""
        msg = self.message()
        if self.chat_of is not msg:
            keep = msg.content and msg.status not in ("error", "streaming")
            self.chat = {"role": msg.role, "content": msg.content} if keep else None
            self.chat_of = msg
        return self.chat

    def message(self) -> Message:
        if self.dirty:
            assert self.pieces is not None
            text = "".join(self.pieces)
            self.pieces = [text]
            self.msg = self.msg._replace(content=text)
            self.dirty = False
        return self.msg


class ConversationTree:
    """The messages of one conversation as a tree with an active branch."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        self._roots: list[_Node] = []
        self._root_choice: _Node | None = None
        self._path: list[_Node] = []  # the active branch, root first
        # chat_messages() of the branch's first len(_chat_ends) messages, kept as the branch
        # grows: _chat holds their chat entries, _chat_ends[i] how many come from path[:i+1]
        self._chat: list[dict[str, str]] = []
        self._chat_ends: list[int] = []
        self._seq = itertools.count()

    # ------------------------------------------------------------------ building

    @classmethod
    def from_messages(
        cls,
        messages: Iterable[Message],
        choices: Mapping[str, str] | None = None,
        root_choice: str | None = None,
    ) -> ConversationTree:
        """Rebuild a tree from messages in creation order (parents before children).

        ``choices`` maps a message id to the child shown last, ``root_choice`` names the first
        message shown; missing or stale choices fall back to the newest leaf. A message whose
        parent is unknown is dropped (and logged), with its descendants.
        """
        tree = cls()
        nodes = tree._nodes
        roots = tree._roots
        seq = tree._seq
        for msg in messages:
            pid = msg.parent_id
            if pid is None:
                node = _Node(msg, None, next(seq))
                roots.append(node)
            else:
                parent = nodes.get(pid)
                if parent is None:
                    log.warning("Dropped message %s: its parent %s is missing", msg.id, pid)
                    continue
                node = _Node(msg, parent, next(seq))
                parent.children.append(node)
            nodes[msg.id] = node
        for pid, cid in (choices or {}).items():
            parent = nodes.get(pid)
            child = nodes.get(cid)
            if parent is not None and child is not None and child.parent is parent:
                parent.choice = child
        if root_choice is not None:
            chosen = nodes.get(root_choice)
            if chosen is not None and chosen.parent is None:
                tree._root_choice = chosen
        tree._path = tree._descend_from_top()
        return tree

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._nodes

    def get(self, message_id: str) -> Message:
        """The message with this id (its streamed text joined)."""
        return self._node(message_id).message()

    @property
    def head(self) -> Message | None:
        """The last message of the active branch, or None in an empty tree."""
        return self._path[-1].message() if self._path else None

    @property
    def head_id(self) -> str | None:
        return self._path[-1].msg.id if self._path else None

    def path(self, start: int = 0, stop: int | None = None) -> list[Message]:
        """The active branch (or its slice ``start:stop``), first message first: O(turns)."""
        nodes = self._path if start == 0 and stop is None else self._path[start:stop]
        return [n.message() for n in nodes]

    def depth(self) -> int:
        """How many messages the active branch has."""
        return len(self._path)

    def last_of_role(self, role: str) -> tuple[int, str] | None:
        """(index, id) of the active branch's last message with ``role``: O(messages after
        it), so O(1) for the last user message of a conversation."""
        path = self._path
        for i in range(len(path) - 1, -1, -1):
            msg = path[i].msg
            if msg.role == role:
                return i, msg.id
        return None

    def chat_messages(self, stop: int | None = None) -> list[dict[str, str]]:
        """The active branch (its first ``stop`` messages) as ``[{"role", "content"}]`` for
        a chat template: kept between calls, so O(messages added since) plus a list copy.

        Leaves out replies still streaming, failed replies and empty messages; keeps stopped
        and interrupted replies (their text is what the user saw). The dicts are shared
        between calls: read them, do not change them.
        """
        path, chat, ends = self._path, self._chat, self._chat_ends
        for node in path[len(ends) :]:  # the messages added since the last call
            entry = node.chat_entry()
            if entry is not None:
                chat.append(entry)
            ends.append(len(chat))
        count = len(path) if stop is None else min(max(stop, 0), len(path))
        return chat[: ends[count - 1]] if count else []

    def messages(self) -> list[Message]:
        """Every message of every branch, in creation order."""
        return [n.message() for n in self._nodes.values()]  # dicts keep insertion order

    def children(self, message_id: str | None) -> list[str]:
        """The ids of a message's children (of the first messages for None), oldest first."""
        kids = self._roots if message_id is None else self._node(message_id).children
        return [k.msg.id for k in kids]

    def choices(self) -> dict[str, str]:
        """``{message id: child shown}`` for every branch point (a message with 2+ children)."""
        return {
            n.msg.id: self._choice_of(n).msg.id for n in self._nodes.values() if len(n.children) > 1
        }

    @property
    def root_choice(self) -> str | None:
        """The first message the active branch shows (None in an empty tree)."""
        return self._path[0].msg.id if self._path else None

    def versions(self, message_id: str) -> Versions:
        """The siblings of a message (oldest first) and the index of the one shown."""
        node = self._node(message_id)
        siblings = self._siblings(node)
        shown = self._root_choice_node() if node.parent is None else self._choice_of(node.parent)
        return Versions(ids=tuple(s.msg.id for s in siblings), index=siblings.index(shown))

    # ------------------------------------------------------------------ changing

    def add(self, message: Message) -> list[tuple[str | None, str]]:
        """Put a message under its parent and make it the head.

        Returns the choices to remember, ``[(parent id or None, child id), ...]``: none when
        the message is its parent's only child under the head (the common case, O(1)); the
        parent's when it now has several children; and those of ancestors that change when
        the parent was not on the active branch. Raises ``UnknownMessageError`` for an
        unknown parent and ``ValueError`` for a duplicate id.
        """
        if message.id in self._nodes:
            raise ValueError(f"A message with id {message.id!r} is already in this conversation.")
        pid = message.parent_id
        parent = None if pid is None else self._node(pid)
        node = _Node(message, parent, next(self._seq))
        self._nodes[message.id] = node
        if parent is None:
            self._roots.append(node)
            return self._activate([node])
        parent.children.append(node)
        path = self._path
        d = parent.depth
        if d < len(path) and path[d] is parent:
            # On the active branch (the head, or Regenerate's user message): the choices
            # above lead here already; only the parent's changes. O(1) at the head.
            del path[d + 1 :]
            self._forget_chat(d + 1)
            parent.choice = node
            path.append(node)
            return [(pid, message.id)] if len(parent.children) > 1 else []
        return self._activate([*self._ancestors(parent), node])

    def append_text(self, message_id: str, piece: str) -> None:
        """Add streamed text to a message: O(1), whatever the history length."""
        node = self._node(message_id)
        if node.pieces is None:
            node.pieces = [node.msg.content] if node.msg.content else []
        node.pieces.append(piece)
        node.dirty = True
        self._changed_on_path(node)

    def update(self, message_id: str, **changes: Any) -> Message:
        """Replace fields of a message (not its id or parent); returns the new message."""
        if "id" in changes or "parent_id" in changes:
            raise ValueError("A message's id and parent cannot change.")
        node = self._node(message_id)
        msg = node.message()._replace(**changes)
        node.msg = msg
        if "content" in changes:
            node.pieces = None
            node.dirty = False
        self._changed_on_path(node)
        return msg

    def select_version(self, message_id: str, index: int) -> list[tuple[str | None, str]]:
        """Show sibling ``index`` (0-based) of a message and move the head into its subtree.

        The head goes to the leaf that was shown last in that subtree; where a branch point
        below has no remembered choice, to the child holding its newest leaf. Returns the
        choices to remember, ``[(parent id or None, child id), ...]`` (the chosen sibling's,
        and its ancestors' when the message was not on the active branch).
        """
        node = self._node(message_id)
        siblings = self._siblings(node)
        if not 0 <= index < len(siblings):
            raise InvalidVersionError(
                f"Message {message_id!r} has {len(siblings)} version(s); "
                f"pick an index from 0 to {len(siblings) - 1}."
            )
        chosen = siblings[index]
        parent = chosen.parent
        above = [] if parent is None else self._ancestors(parent)
        changed = self._activate([*above, chosen], always=chosen)
        self._path.extend(self._descend(chosen)[1:])
        return changed

    # ------------------------------------------------------------------ internals

    def _node(self, message_id: str) -> _Node:
        try:
            return self._nodes[message_id]
        except KeyError:
            raise UnknownMessageError(f"No message {message_id!r} in this conversation.") from None

    def _siblings(self, node: _Node) -> list[_Node]:
        return self._roots if node.parent is None else node.parent.children

    def _ancestors(self, node: _Node) -> list[_Node]:
        """The chain from the root to ``node`` inclusive: a slice of the path when it is on it."""
        d = node.depth
        if d < len(self._path) and self._path[d] is node:
            return self._path[: d + 1]
        chain = []
        cur: _Node | None = node
        while cur is not None:
            chain.append(cur)
            cur = cur.parent
        chain.reverse()
        return chain

    def _activate(
        self, chain: list[_Node], always: _Node | None = None
    ) -> list[tuple[str | None, str]]:
        """Make ``chain`` (from a first message down) the active branch: set each node's
        choice to the next one. Returns the changed choices at branch points (and the one
        that leads to ``always``, changed or not) for the store to remember."""
        changed: list[tuple[str | None, str]] = []
        upper: _Node | None = None
        for lower in chain:
            siblings = self._roots if upper is None else upper.children
            shown = self._root_choice if upper is None else upper.choice
            if shown is not lower or lower is always:
                if upper is None:
                    self._root_choice = lower
                else:
                    upper.choice = lower
                if len(siblings) > 1 or lower is always:
                    changed.append((None if upper is None else upper.msg.id, lower.msg.id))
            upper = lower
        self._path = chain
        self._forget_chat(0)  # a new branch (rare: Edit, a version picked, an import)
        return changed

    def _changed_on_path(self, node: _Node) -> None:
        """A message changed: if the active branch shows it, its chat entry is stale."""
        d = node.depth
        if d < len(self._chat_ends) and self._path[d] is node:
            self._forget_chat(d)

    def _forget_chat(self, index: int) -> None:
        """Drop the kept chat entries of the active branch from message ``index`` on."""
        ends = self._chat_ends
        if index < len(ends):
            del ends[index:]
            del self._chat[ends[-1] if ends else 0 :]

    def _descend(self, node: _Node) -> list[_Node]:
        """``node`` and the chain of choices below it down to a leaf: O(depth)."""
        chain = [node]
        while node.children:
            node = self._choice_of(node)
            chain.append(node)
        return chain

    @staticmethod
    def _choice_of(node: _Node) -> _Node:
        """The child a node shows (it has children): remembered, its only child, or the
        child that holds the newest leaf (an imported tree, a file without the choice)."""
        choice = node.choice
        if choice is None:
            kids = node.children
            choice = kids[0] if len(kids) == 1 else max(kids, key=_newest_leaf_seq)
            node.choice = choice
        return choice

    def _root_choice_node(self) -> _Node:
        if self._root_choice is None:
            roots = self._roots
            self._root_choice = roots[0] if len(roots) == 1 else max(roots, key=_newest_leaf_seq)
        return self._root_choice

    def _descend_from_top(self) -> list[_Node]:
        return self._descend(self._root_choice_node()) if self._roots else []


def _newest_leaf_seq(node: _Node) -> int:
    """The creation number of the newest leaf under ``node`` (itself if it is a leaf)."""
    newest = -1
    stack = [node]
    while stack:
        cur = stack.pop()
        if cur.children:
            stack.extend(cur.children)
        elif cur.seq > newest:
            newest = cur.seq
    return newest
