"""Value types of the history package: messages, conversations, versions, comparisons, warnings.

Everything here is immutable. :class:`Message` is a ``NamedTuple`` whose fields are, in order,
the columns the store reads, so a restore builds one with ``Message._make(row)`` and no
per-field work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from chatwidget.failure import Failure

Role = Literal["system", "user", "assistant"]
Status = Literal["done", "streaming", "stopped", "error", "interrupted"]

ROLES: tuple[Role, ...] = ("system", "user", "assistant")
STATUSES: tuple[Status, ...] = ("done", "streaming", "stopped", "error", "interrupted")
#: Statuses a finished reply can have (``finish_reply``).
FINAL_STATUSES: tuple[Status, ...] = ("done", "stopped", "error", "interrupted")


def new_id(prefix: str) -> str:
    """A unique id such as ``m-1f3a9b2c04d5e6f7`` (64 random bits: unique across processes)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class UsageLike(Protocol):
    """Anything that describes what a reply cost, e.g. :class:`chatwidget.engine.types.Usage`."""

    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def new_tokens(self) -> int | None: ...
    @property
    def time_to_first_token_s(self) -> float | None: ...
    @property
    def tokens_per_s(self) -> float | None: ...
    @property
    def duration_s(self) -> float | None: ...


class Usage(NamedTuple):
    """What one reply cost. Every field may be unknown (None), e.g. for imported replies."""

    prompt_tokens: int | None = None
    new_tokens: int | None = None
    time_to_first_token_s: float | None = None
    tokens_per_s: float | None = None
    duration_s: float | None = None

    @classmethod
    def of(cls, usage: UsageLike) -> Usage:
        """Copy the usage fields of any usage-like object (the engine's ``Usage``, say)."""
        return cls(
            usage.prompt_tokens,
            usage.new_tokens,
            usage.time_to_first_token_s,
            usage.tokens_per_s,
            usage.duration_s,
        )


class Message(NamedTuple):
    """One node of a conversation tree.

    ``parent_id`` is None for a first message. Replies carry the ``model`` that wrote them and
    their usage (flat fields; :attr:`usage` groups them). ``status`` is ``"streaming"`` while
    a reply is written, then ``"done"``, ``"stopped"`` (the user stopped it), ``"error"``
    (``error`` says why) or ``"interrupted"`` (the process died mid-reply; the text is what
    was saved).
    """

    id: str
    parent_id: str | None
    role: Role
    content: str
    status: Status = "done"
    model: str | None = None
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    time_to_first_token_s: float | None = None
    tokens_per_s: float | None = None
    duration_s: float | None = None
    error: str | None = None
    created_at: float = 0.0

    @property
    def usage(self) -> Usage | None:
        """The reply's usage, or None when nothing is known."""
        u = Usage(
            self.prompt_tokens,
            self.new_tokens,
            self.time_to_first_token_s,
            self.tokens_per_s,
            self.duration_s,
        )
        return None if u == _NO_USAGE else u

    def as_chat(self) -> dict[str, str]:
        """The ``{"role", "content"}`` form chat templates and the OpenAI API take."""
        return {"role": self.role, "content": self.content}


_NO_USAGE = Usage()


@dataclass(frozen=True)
class ConversationInfo:
    """A conversation's metadata. ``model`` is the model the user asked for (a repo id)."""

    id: str
    workspace: str
    title: str
    model: str | None
    created_at: float
    updated_at: float
    message_count: int = 0
    """All messages of the tree, every branch included."""
    head_id: str | None = None
    """The last message of the active branch."""


@dataclass(frozen=True)
class Versions:
    """The siblings of a message (its versions) and which one the active branch shows."""

    ids: tuple[str, ...]
    index: int
    """0-based position of the shown sibling in ``ids`` (oldest first)."""

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def label(self) -> str:
        """The pager text, e.g. ``"2 / 3"``."""
        return f"{self.index + 1} / {len(self.ids)}"


@dataclass(frozen=True)
class WorkspaceInfo:
    """A workspace key, how many conversations it holds and when one last changed."""

    name: str
    conversations: int
    updated_at: float


@dataclass(frozen=True)
class ComparisonResult:
    """One model's answer in a comparison."""

    model: str
    text: str
    status: Status = "done"
    usage: Usage | None = None
    error: str | None = None


@dataclass(frozen=True)
class Comparison:
    """One prompt answered by several models side by side, and the user's vote.

    ``vote`` is free text chosen by the compare view (a model id, ``"tie"``, ...), or None.
    ``blind`` says the model names were hidden while voting.
    """

    id: str
    workspace: str
    prompt: str
    results: tuple[ComparisonResult, ...]
    blind: bool = False
    vote: str | None = None
    created_at: float = 0.0
    conversation_id: str | None = None

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(r.model for r in self.results)


WarningKind = Literal[
    "locked",  # another process held the write lock past the busy timeout
    "read_only",  # the file or its folder cannot be written
    "disk_full",  # no space left for the write
    "unavailable",  # any other I/O failure
    "corrupt",  # the file was damaged; it was moved aside and a new one started
    "newer_schema",  # the file was written by a newer chatwidget; not written this session
    "foreign",  # the file is an SQLite database but not a chatwidget history
]

#: Kinds that go away by themselves once a retry succeeds.
TRANSIENT_KINDS: frozenset[str] = frozenset({"locked", "read_only", "disk_full", "unavailable"})

_ACTIONS: dict[str, str | None] = {
    "locked": "Retry",
    "read_only": "Check the file's permissions",
    "disk_full": "Free disk space",
    "unavailable": "Retry",
    "corrupt": None,
    "newer_schema": "Update chatwidget",
    "foreign": "Pick another history file",
}


@dataclass(frozen=True)
class StoreWarning:
    """A problem with the history file, in words the widget can show.

    While a transient warning (``locked``, ``read_only``, ``disk_full``, ``unavailable``)
    stands, the chat goes on in memory and ``pending_writes`` changes wait to be retried.
    ``moved_to`` names where a corrupt file went.
    """

    kind: WarningKind
    message: str
    path: str
    pending_writes: int = 0
    moved_to: str | None = None

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS

    def as_failure(self) -> Failure:
        """The project's one failure value, for the widget's error rows."""
        return Failure(
            kind=f"history_{self.kind}",
            message=self.message,
            retryable=self.kind in ("locked", "unavailable", "disk_full", "read_only"),
            action=_ACTIONS[self.kind],
        )
