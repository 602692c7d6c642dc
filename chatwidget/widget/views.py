"""Session state -> trait values (pure functions), one part at a time.

The publisher renders only the parts the session says changed (:data:`TRAITS`), so what a
render costs depends on that part alone: the rows of the models or downloads, the list of
conversations, or one page of the active conversation, never its whole history. What the
user may do with a row (``can_cancel``, ``can_retry``) comes from the lifecycle module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from chatwidget.catalog import ModelSpec
from chatwidget.engine.types import GenerationSettings
from chatwidget.orchestrator import ModelState, ModelStatus, OrchestratorSnapshot
from chatwidget.orchestrator.lifecycle import can_cancel, can_retry
from chatwidget.session import Part, Session, Window
from chatwidget.session.deltas import DeltaStream
from chatwidget.session.messages import ConversationInfo, Message
from chatwidget.session.persistence import storage_state
from chatwidget.session.settings import settings_dict as _settings_dict
from chatwidget.widget.protocol import (
    PAGE_SIZE,
    ConversationRow,
    DownloadRow,
    MessageRow,
    ModelRow,
    SettingsDict,
    StateLabel,
    Transcript,
)

#: The traits each part of the session's state is shown in.
TRAITS: dict[Part, tuple[str, ...]] = {
    "models": ("models",),
    "downloads": ("downloads",),
    "conversations": ("conversations", "active_conversation"),
    "transcript": ("transcript",),
    "settings": ("settings",),
    "errors": ("errors",),
    "switch": ("last_switch",),
    "focus": ("download_focus_seq",),
    "activity": ("generating", "busy"),
    "storage": ("storage",),
}


def render(session: Session, parts: Iterable[Part]) -> dict[str, Any]:
    """The trait values of ``parts``, from the session's state now."""
    taken: list[OrchestratorSnapshot] = []

    def snapshot() -> OrchestratorSnapshot:  # taken once, and only if a part needs it
        if not taken:
            taken.append(session.snapshot())
        return taken[0]

    out: dict[str, Any] = {}
    for part in set(parts):
        match part:
            case "models":
                out["models"] = model_rows(session.catalog, snapshot())
            case "downloads":
                out["downloads"] = download_rows(session.download_order, snapshot())
            case "conversations":
                out["conversations"] = conversation_rows(session.conversations(), snapshot())
                out["active_conversation"] = session.conversation_id
            case "transcript":
                out["transcript"] = transcript(session.window(PAGE_SIZE), session.deltas)
            case "settings":
                out["settings"] = settings_dict(session.settings)
            case "errors":
                out["errors"] = [{"seq": n.seq, "message": n.message} for n in session.errors]
            case "switch":
                switch = session.last_switch
                out["last_switch"] = None if switch is None else switch._asdict()
            case "focus":
                out["download_focus_seq"] = session.focus_seq
            case "activity":
                out["generating"] = session.generating
                out["busy"] = out["generating"] or session.busy(snapshot())
            case "storage":
                out["storage"] = storage_state(session.history)
    return out


def state_label(snapshot: OrchestratorSnapshot, repo_id: str) -> StateLabel:
    """The state label the UI shows for a model."""
    status = snapshot.models.get(repo_id)
    return status.state.value if status else ModelState.NOT_DOWNLOADED.value


def _actions(status: ModelStatus | None) -> dict[str, Any]:
    """What the user may do with a model in this state (from the lifecycle module)."""
    if status is None:
        return {"can_cancel": False, "can_retry": False, "action": None}
    failed = status.state is ModelState.FAILED
    return {
        "can_cancel": can_cancel(status.state),
        "can_retry": can_retry(status.state, status.failure),
        "action": status.failure.action if failed and status.failure else None,
    }


def model_rows(specs: Iterable[ModelSpec], snapshot: OrchestratorSnapshot) -> list[ModelRow]:
    rows: list[ModelRow] = []
    for spec in specs:
        status = snapshot.models.get(spec.repo_id)
        rows.append(
            {
                "repo_id": spec.repo_id,
                "name": spec.name,
                "params": spec.params,
                "size_bytes": spec.size_bytes,
                "state": state_label(snapshot, spec.repo_id),
                "error": status.error if status else None,
                **_actions(status),  # type: ignore[typeddict-item]
            }
        )
    return rows


def download_rows(order: Sequence[str], snapshot: OrchestratorSnapshot) -> list[DownloadRow]:
    """One row per model that went through the queue, in the order it was first queued."""
    rows: list[DownloadRow] = []
    for repo_id in order:
        status = snapshot.models.get(repo_id)
        if status is None:
            continue
        p = status.progress
        done = p.bytes_done if p else 0
        total = p.bytes_total if p else 0
        if status.state in (ModelState.COMPILING, ModelState.READY) and total:
            done = total
        downloading = p is not None and status.state is ModelState.DOWNLOADING
        rows.append(
            {
                "repo_id": repo_id,
                "state": status.state.value,
                "bytes_done": done,
                "bytes_total": total,
                "speed_bps": p.speed_bps if p and downloading else 0.0,
                "eta_s": p.eta_s if p and downloading else None,
                "error": status.error if status.state is ModelState.FAILED else None,
                "file": p.file if p and downloading else "",
                **_actions(status),  # type: ignore[typeddict-item]
            }
        )
    return rows


def message_row(m: Message, stream: tuple[str, int] | None = None) -> MessageRow:
    """A message as the UI shows it; a streaming one with the text streamed so far."""
    content, chunks = stream if stream is not None else (m.content, 0)
    return {
        "id": m.id,
        "role": m.role,
        "content": content,
        "status": m.status,
        "model": m.model,
        "new_tokens": m.new_tokens,
        "tokens_per_s": None if m.tokens_per_s is None else round(m.tokens_per_s, 2),
        "error": m.error,
        "chunks": chunks,
        "version": m.version,
        "versions": m.versions,
    }


def message_rows(messages: Iterable[Message], deltas: DeltaStream) -> list[MessageRow]:
    return [
        message_row(m, deltas.snapshot(m.id) if m.status == "streaming" else None) for m in messages
    ]


def transcript(window: Window, deltas: DeltaStream) -> Transcript:
    return {
        "conversation_id": window.conversation_id,
        "epoch": window.epoch,
        "start": window.start,
        "total": window.total,
        "messages": message_rows(window.messages, deltas),
    }


def conversation_rows(
    conversations: Iterable[ConversationInfo], snapshot: OrchestratorSnapshot
) -> list[ConversationRow]:
    rows: list[ConversationRow] = []
    for conv in conversations:
        intent = snapshot.conversations.get(conv.id)
        rows.append(
            {
                "id": conv.id,
                "title": conv.title,
                "active_model": intent.active_model if intent else None,
                "requested_model": (intent.requested_model if intent else None) or conv.model,
            }
        )
    return rows


def settings_dict(s: GenerationSettings) -> SettingsDict:
    return _settings_dict(s)  # type: ignore[return-value]
