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
    structured form of ``error`` (kind, retryable, action).
    """

    state: ModelState
    progress: DownloadProgress | None = None
    error: str | None = None
    failure: Failure | None = None
    history: tuple[str, ...] = ()
    cold_swap: bool = False


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
