"""Immutable views of the orchestrator's state, for the widget and for tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from chatwidget.downloads.types import DownloadProgress
from chatwidget.failure import Failure
from chatwidget.orchestrator.lifecycle import ModelState


@dataclass(frozen=True)
class ModelStatus:
    """One model: its state, latest download progress, current error, and past errors.

    ``history`` keeps every error of every attempt, oldest first, so a retry does not
    lose why the earlier attempt failed. ``cold_swap`` says the last load unloaded a
    conversation's own active model first because both would not fit. ``failure`` is the
    structured form of ``error`` (kind, retryable, action). ``note`` is a status text to show
    beside the state ("waiting for the reply on X to finish", "Waiting for another download
    of X"). While Ready: ``placement`` says where it sits ("GPU 0", "CPU", "disk offload",
    from accelerate's ``hf_device_map``), ``device_map`` has the detail, ``memory_bytes``
    what the memory budget counts for it, and ``last_used`` when a reply last used it
    (orchestrator clock), from which ``keep_alive`` counts.
    """

    state: ModelState
    progress: DownloadProgress | None = None
    error: str | None = None
    failure: Failure | None = None
    history: tuple[str, ...] = ()
    cold_swap: bool = False
    note: str | None = None
    placement: tuple[str, ...] = ()
    device_map: Mapping[str, str] | None = None
    memory_bytes: int | None = None
    last_used: float | None = None


class ConversationStatus(NamedTuple):
    """One conversation: its group, the model it chats with, and the model it asked for."""

    group: str
    active_model: str | None
    requested_model: str | None


@dataclass(frozen=True)
class OrchestratorSnapshot:
    """Everything at one instant. ``seq`` is the last event published before it."""

    models: Mapping[str, ModelStatus]
    conversations: Mapping[str, ConversationStatus]
    active: Mapping[str, str | None]  # group -> on-screen conversation id
    queue: tuple[str, ...]  # waiting repo ids, front first (not the one being worked on)
    working: str | None  # the repo id being downloaded or loaded now
    seq: int

    def state(self, repo_id: str) -> ModelState:
        """The state of ``repo_id`` (Not downloaded for a model nobody registered)."""
        status = self.models.get(repo_id)
        return status.state if status is not None else ModelState.NOT_DOWNLOADED

    def active_model(self, conversation_id: str) -> str | None:
        """The model the conversation chats with (it may be asleep: see :meth:`is_asleep`)."""
        status = self.conversations.get(conversation_id)
        return status.active_model if status is not None else None

    def is_asleep(self, conversation_id: str) -> bool:
        """True when the conversation's model is not in memory now: it loads on the next send."""
        repo_id = self.active_model(conversation_id)
        return repo_id is not None and self.state(repo_id) is not ModelState.READY
