"""Session state -> trait values (pure functions), one part at a time.

The publisher renders only the parts the session says changed (:data:`TRAITS`), so what a
render costs depends on that part alone: the rows of the models or downloads, the list of
conversations, or one page of the active conversation, never its whole history. What the
user may do with a row (``can_cancel``, ``can_retry``) comes from the lifecycle module.

The model rows, the download rows and the conversations' models are always rendered
together, from one orchestrator snapshot, so ``chat.downloads``, ``chat.model_state()`` and
``chat.active_model`` never disagree (:data:`MODEL_PARTS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chatwidget.catalog import ModelSpec, split_remote_key
from chatwidget.engine.types import GenerationSettings
from chatwidget.orchestrator import ModelState, ModelStatus, OrchestratorSnapshot
from chatwidget.orchestrator.lifecycle import can_cancel, can_retry
from chatwidget.session import Part, Session, Window
from chatwidget.session.deltas import DeltaStream
from chatwidget.session.messages import ConversationInfo, Message
from chatwidget.session.persistence import storage_state
from chatwidget.session.settings import settings_dict as _settings_dict
from chatwidget.widget.fit_options import option_of
from chatwidget.widget.protocol import (
    PAGE_SIZE,
    ConversationRow,
    DownloadRow,
    FitInfo,
    MessageRow,
    ModelRow,
    Residency,
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

#: Parts rendered together from one snapshot when any of them changed.
MODEL_PARTS: frozenset[Part] = frozenset({"models", "downloads", "conversations"})

#: Where a row finds a model's fit estimate (None: not estimated).
FitLookup = Callable[[str], FitInfo | None]


def render(
    session: Session,
    parts: Iterable[Part],
    *,
    fits: FitLookup | None = None,
    snapshot_taken: Callable[[OrchestratorSnapshot], None] | None = None,
) -> dict[str, Any]:
    """The trait values of ``parts``, from the session's state now. ``snapshot_taken`` is
    told the orchestrator snapshot the rows were rendered from."""
    taken: list[OrchestratorSnapshot] = []

    def snapshot() -> OrchestratorSnapshot:  # taken once, and only if a part needs it
        if not taken:
            taken.append(session.snapshot())
            if snapshot_taken is not None:
                snapshot_taken(taken[0])
        return taken[0]

    wanted = set(parts)
    if wanted & MODEL_PARTS:
        wanted |= MODEL_PARTS
    out: dict[str, Any] = {}
    for part in wanted:
        match part:
            case "models":
                out["models"] = model_rows(session.catalog, snapshot(), session, fits)
            case "downloads":
                out["downloads"] = download_rows(session.download_order, snapshot(), session)
            case "conversations":
                out["conversations"] = conversation_rows(session.conversations(), snapshot())
                out["active_conversation"] = session.conversation_id
            case "transcript":
                out["transcript"] = transcript(
                    session.window(PAGE_SIZE), session.deltas, session.loading_message
                )
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


def residency(
    status: ModelStatus | None, freed_bytes: Callable[[str], int | None] | None, repo_id: str
) -> Residency:
    """Where a loaded model sits and what it takes; what its last unload freed otherwise."""
    ready = status is not None and status.state is ModelState.READY
    return {
        "placement": list(status.placement) if ready and status else [],
        "memory_bytes": status.memory_bytes if ready and status else None,
        "can_unload": ready,
        "freed_bytes": None if ready or freed_bytes is None else freed_bytes(repo_id),
        "note": _note(status),
    }


def _note(status: ModelStatus | None) -> str | None:
    """The lifecycle's note, else the download's ("Waiting for another download of X")."""
    if status is None:
        return None
    if status.note:
        return status.note
    p = status.progress
    downloading = status.state is ModelState.DOWNLOADING
    return p.note if p is not None and downloading and p.note else None


def model_rows(
    specs: Iterable[ModelSpec],
    snapshot: OrchestratorSnapshot,
    session: Session | None = None,
    fits: FitLookup | None = None,
) -> list[ModelRow]:
    freed = session.freed_bytes if session is not None else None
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
                "residency": residency(status, freed, spec.repo_id),
                "precision": option_of(spec),
                "fit": fits(spec.repo_id) if fits is not None else None,
                "server": server_of(spec.repo_id),
            }
        )
    return rows


def server_of(key: str) -> str | None:
    """The server of a remote model key (``"gpu"`` for ``"gpu:org/name"``), else None."""
    parts = split_remote_key(key)
    return parts[0] if parts else None


def download_rows(
    order: Sequence[str], snapshot: OrchestratorSnapshot, session: Session | None = None
) -> list[DownloadRow]:
    """One row per model that went through the queue, in the order it was first queued."""
    freed = session.freed_bytes if session is not None else None
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
                "residency": residency(status, freed, repo_id),
                "server": server_of(repo_id),
            }
        )
    return rows


#: A streaming reply's note while its asleep model loads again.
LOADING_NOTE = "Loading model…"


def message_row(
    m: Message, stream: tuple[str, int] | None = None, note: str | None = None
) -> MessageRow:
    """A message as the UI shows it; a streaming one with the text streamed so far."""
    content, chunks = stream if stream is not None else (m.content, 0)
    row: MessageRow = {
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
    if note is not None:
        row["note"] = note
    return row


def message_rows(
    messages: Iterable[Message], deltas: DeltaStream, loading: str | None = None
) -> list[MessageRow]:
    return [
        message_row(
            m,
            deltas.snapshot(m.id) if m.status == "streaming" else None,
            LOADING_NOTE if loading is not None and m.id == loading else None,
        )
        for m in messages
    ]


def transcript(window: Window, deltas: DeltaStream, loading: str | None = None) -> Transcript:
    return {
        "conversation_id": window.conversation_id,
        "epoch": window.epoch,
        "start": window.start,
        "total": window.total,
        "messages": message_rows(window.messages, deltas, loading),
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
