"""The rows a store keeps and the changes it commits.

A :class:`Change` is one unit of work that is committed atomically (all of its operations
or none): a finished turn, a rename, a delete, a branch, a model change, settings. Stores
apply the operations in order. Every operation is idempotent, so a change that is retried
after a failed commit does the same thing again.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from chatwidget.history.types import Comparison, Message, Status


class ConversationRow(NamedTuple):
    """A conversation as stored. ``root_choice`` is the first message the active branch shows."""

    id: str
    workspace: str
    title: str
    model: str | None
    root_choice: str | None
    created_at: float
    updated_at: float


class CreateConversation(NamedTuple):
    row: ConversationRow


class UpdateConversation(NamedTuple):
    """Title, model and ``updated_at`` of an existing conversation (no-op if it is gone)."""

    row: ConversationRow


class DeleteConversation(NamedTuple):
    """Delete a conversation with all its messages."""

    conversation_id: str


class PutMessage(NamedTuple):
    """Insert a message, or replace every field of it but its choice of child."""

    conversation_id: str
    message: Message


class UpdateText(NamedTuple):
    """A streaming checkpoint: a message's text and status so far."""

    message_id: str
    content: str
    status: Status


class SetChoice(NamedTuple):
    """Which child of ``parent_id`` (of the conversation's first messages when None) is shown."""

    conversation_id: str
    parent_id: str | None
    child_id: str


class PutSettings(NamedTuple):
    """Set settings of a workspace; values are JSON texts."""

    workspace: str
    values: tuple[tuple[str, str], ...]


class PutComparison(NamedTuple):
    comparison: Comparison


class SetVote(NamedTuple):
    comparison_id: str
    vote: str | None


class DeleteComparison(NamedTuple):
    comparison_id: str


Op = (
    CreateConversation
    | UpdateConversation
    | DeleteConversation
    | PutMessage
    | UpdateText
    | SetChoice
    | PutSettings
    | PutComparison
    | SetVote
    | DeleteComparison
)


class Change(NamedTuple):
    """Operations committed together. ``what`` names the change in logs and warnings.

    ``can_wait``: nothing the user wrote or read is in it (a reply starting, still empty), so
    a store may hold it back a little (see ``SQLiteStore``) to keep disk work off the start
    of a reply; the next change, checkpoint or flush takes it along, in order.
    """

    what: str
    ops: tuple[Op, ...]
    can_wait: bool = False


class ConversationRecord(NamedTuple):
    """A stored conversation: its row, its messages in creation order, its choices."""

    row: ConversationRow
    messages: list[Message]
    choices: dict[str, str]


class WorkspaceData(NamedTuple):
    """Everything a workspace holds, as a restore reads it."""

    conversations: list[ConversationRecord]
    settings: dict[str, Any]
    comparisons: list[Comparison]
