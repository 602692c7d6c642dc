"""Per-conversation intent: the active model, the requested target, and the groups.

Pure bookkeeping with no locking and no I/O; the orchestrator calls it under its
state lock. A conversation's ``target`` equals its ``active`` model when nothing is
pending. ``announced`` is the last model a Switched event told the UI about, so a
conversation that got its model while off screen is announced when it comes back.

A conversation keeps its ``active`` model when that model is unloaded (evicted for room,
idle past ``keep_alive``, or unloaded by the user): the model is *asleep* and loads again
on the conversation's next message, so an unload never leaves a conversation without a
model.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatwidget.errors import ConversationExistsError, UnknownConversationError


@dataclass
class Conversation:
    """Mutable intent record of one conversation."""

    conversation_id: str
    group: str
    active: str | None = None
    target: str | None = None
    announced: str | None = None


class IntentBook:
    """All conversations, grouped by view, with the active conversation of each group."""

    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        self._active_by_group: dict[str, str | None] = {}

    # --- conversations ------------------------------------------------------------

    def open(self, conversation_id: str, group: str) -> Conversation:
        """Add a conversation; the first one of a group becomes the group's active one."""
        if conversation_id in self._conversations:
            raise ConversationExistsError(
                f"Conversation {conversation_id!r} is already open; "
                "pick a new id or close the old one first."
            )
        conversation = Conversation(conversation_id, group)
        self._conversations[conversation_id] = conversation
        if self._active_by_group.get(group) is None:
            self._active_by_group[group] = conversation_id
        return conversation

    def close(self, conversation_id: str) -> None:
        """Remove a conversation; its group has no active conversation if it was it."""
        conversation = self.get(conversation_id)
        del self._conversations[conversation_id]
        if self._active_by_group.get(conversation.group) == conversation_id:
            self._active_by_group[conversation.group] = None

    def get(self, conversation_id: str) -> Conversation:
        """The record of ``conversation_id``, or :class:`UnknownConversationError`."""
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise UnknownConversationError(
                f"No conversation has id {conversation_id!r}; open it with "
                "open_conversation() first."
            ) from None

    def all(self) -> tuple[Conversation, ...]:
        """Every conversation, in the order they were opened."""
        return tuple(self._conversations.values())

    def groups(self) -> dict[str, str | None]:
        """A copy of group -> active conversation id."""
        return dict(self._active_by_group)

    def set_active(self, conversation_id: str, group: str) -> Conversation:
        """Make ``conversation_id`` its group's active (on-screen) conversation."""
        conversation = self.get(conversation_id)
        if conversation.group != group:
            raise UnknownConversationError(
                f"Conversation {conversation_id!r} belongs to group {conversation.group!r}, "
                f"not {group!r}; pass group={conversation.group!r}."
            )
        self._active_by_group[group] = conversation_id
        return conversation

    def active_conversation(self, group: str) -> str | None:
        """The on-screen conversation of ``group``, if any."""
        return self._active_by_group.get(group)

    def in_group(self, group: str) -> tuple[Conversation, ...]:
        """The conversations of ``group``, in the order they were opened."""
        return tuple(c for c in self._conversations.values() if c.group == group)

    def close_group(self, group: str) -> tuple[str, ...]:
        """Close every conversation of ``group`` and forget the group; returns their ids."""
        ids = tuple(c.conversation_id for c in self.in_group(group))
        for conversation_id in ids:
            del self._conversations[conversation_id]
        self._active_by_group.pop(group, None)
        return ids

    def is_on_screen(self, conversation: Conversation) -> bool:
        """Whether ``conversation`` is its group's active conversation."""
        return self._active_by_group.get(conversation.group) == conversation.conversation_id

    # --- models ---------------------------------------------------------------------

    def active_models(self, *, excluding: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """Distinct active models in conversation order, skipping ids in ``excluding``."""
        seen: dict[str, None] = {}
        for conversation in self._conversations.values():
            if conversation.active is not None and conversation.conversation_id not in excluding:
                seen[conversation.active] = None
        return tuple(seen)

    def wanting(self, repo_id: str) -> tuple[Conversation, ...]:
        """Conversations whose pending target is ``repo_id`` (not yet active there)."""
        return tuple(
            c for c in self._conversations.values() if c.target == repo_id and c.active != repo_id
        )

    def targeting(self, repo_id: str) -> tuple[Conversation, ...]:
        """Conversations whose target is ``repo_id``, whether or not it is their active model
        already (while ``repo_id`` is not loaded, both want it loaded)."""
        return tuple(c for c in self._conversations.values() if c.target == repo_id)

    def using(self, repo_id: str) -> tuple[Conversation, ...]:
        """Conversations whose active model is ``repo_id`` (loaded or asleep)."""
        return tuple(c for c in self._conversations.values() if c.active == repo_id)

    def activate(self, repo_id: str) -> tuple[Conversation, ...]:
        """``repo_id`` is Ready: make it active wherever it is the pending target.

        Returns the conversations that switched; announce those on screen.
        """
        switched = self.wanting(repo_id)
        for conversation in switched:
            conversation.active = repo_id
        return switched

    def withdraw_target(self, repo_id: str) -> None:
        """``repo_id`` was canceled: targets pointing at it go back to the active model."""
        for conversation in self._conversations.values():
            if conversation.target == repo_id and conversation.active != repo_id:
                conversation.target = conversation.active

    def owed_announcement(self, conversation: Conversation) -> str | None:
        """The model to announce for ``conversation`` now, if it is on screen and changed."""
        if (
            self.is_on_screen(conversation)
            and conversation.active is not None
            and conversation.active != conversation.announced
        ):
            return conversation.active
        return None
