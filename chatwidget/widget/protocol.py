"""The widget's wire format: synced trait shapes and custom messages.

Mirrored in ``js/src/protocol.ts``; keep the two in step.

State that must survive a re-render or a page reload lives in traits, written by the
kernel only. The front end sends *intents* as custom messages, each
``{"id", "kind", ...}``; every one is answered ``{"id", "kind": "<kind>-response",
"ok", "error"?}``, errors included.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

StateLabel = Literal[
    "Not downloaded",
    "Downloaded",
    "Queued",
    "Downloading",
    "Compiling",
    "Connecting",
    "Ready",
    "Failed",
    "Canceled",
]


class ModelRow(TypedDict):
    """One catalog entry, trait ``models``."""

    repo_id: str
    name: str
    params: str
    size_bytes: int | None
    state: StateLabel
    error: str | None


class MessageRow(TypedDict):
    """One chat message."""

    id: str
    role: Literal["user", "assistant", "system"]
    content: str
    status: Literal["done", "streaming", "stopped", "error"]
    model: str | None
    new_tokens: int | None
    tokens_per_s: float | None
    error: str | None


class ConversationRow(TypedDict):
    """One conversation, trait ``conversations``."""

    id: str
    title: str
    active_model: str | None
    requested_model: str | None
    messages: list[MessageRow]


class DownloadRow(TypedDict):
    """One row of the download manager, trait ``downloads``."""

    repo_id: str
    state: StateLabel
    bytes_done: int
    bytes_total: int
    speed_bps: float
    eta_s: float | None
    error: str | None
    file: str


class SettingsDict(TypedDict):
    """Generation settings, trait ``settings``."""

    system_prompt: str
    max_new_tokens: int
    temperature: float
    top_p: float
    do_sample: bool


class SwitchNotice(TypedDict):
    """Trait ``last_switch``: the latest auto-switch; ``seq`` grows by one each time."""

    seq: int
    conversation_id: str
    repo_id: str


class ErrorNotice(TypedDict):
    """One entry of trait ``errors``: a failure shown in the widget."""

    seq: int
    message: str


IntentKind = Literal[
    "send",
    "stop",
    "regenerate",
    "select_model",
    "add_model",
    "cancel_download",
    "retry_download",
    "new_conversation",
    "switch_conversation",
    "rename_conversation",
    "delete_conversation",
    "set_settings",
]

INTENT_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "send": {"text": str},
    "stop": {},
    "regenerate": {},
    "select_model": {"repo_id": str},
    "add_model": {"repo_id": str},
    "cancel_download": {"repo_id": str},
    "retry_download": {"repo_id": str},
    "new_conversation": {},
    "switch_conversation": {"conversation_id": str},
    "rename_conversation": {"conversation_id": str, "title": str},
    "delete_conversation": {"conversation_id": str},
    "set_settings": {"settings": dict},
}
"""Required fields (beyond ``id`` and ``kind``) of each intent, with their types."""


class Reply(TypedDict):
    """The answer to every intent."""

    id: str
    kind: str
    ok: bool
    error: NotRequired[str]
