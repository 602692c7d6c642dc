"""Pure functions that turn kernel-side state into the widget's trait values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from chatwidget.catalog import ModelSpec
from chatwidget.engine.types import GenerationSettings
from chatwidget.orchestrator import ModelState, OrchestratorSnapshot
from chatwidget.widget.conversation import Conversation, Message
from chatwidget.widget.protocol import (
    ConversationRow,
    DownloadRow,
    MessageRow,
    ModelRow,
    SettingsDict,
    StateLabel,
)


def state_label(snapshot: OrchestratorSnapshot, repo_id: str) -> StateLabel:
    """The state label the UI shows for a model."""
    status = snapshot.models.get(repo_id)
    return status.state.value if status else ModelState.NOT_DOWNLOADED.value


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
        rows.append(
            {
                "repo_id": repo_id,
                "state": status.state.value,
                "bytes_done": done,
                "bytes_total": total,
                "speed_bps": p.speed_bps if p and status.state is ModelState.DOWNLOADING else 0.0,
                "eta_s": p.eta_s if p and status.state is ModelState.DOWNLOADING else None,
                "error": status.error if status.state is ModelState.FAILED else None,
                "file": p.file if p and status.state is ModelState.DOWNLOADING else "",
            }
        )
    return rows


def message_row(m: Message) -> MessageRow:
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "model": m.model,
        "new_tokens": m.new_tokens,
        "tokens_per_s": None if m.tokens_per_s is None else round(m.tokens_per_s, 2),
        "error": m.error,
    }


def conversation_rows(
    conversations: Iterable[Conversation], snapshot: OrchestratorSnapshot
) -> list[ConversationRow]:
    rows: list[ConversationRow] = []
    for conv in conversations:
        intent = snapshot.conversations.get(conv.id)
        rows.append(
            {
                "id": conv.id,
                "title": conv.title,
                "active_model": intent.active_model if intent else None,
                "requested_model": intent.requested_model if intent else None,
                "messages": [message_row(m) for m in conv.messages],
            }
        )
    return rows


def settings_dict(s: GenerationSettings) -> SettingsDict:
    return {
        "system_prompt": s.system_prompt,
        "max_new_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "do_sample": s.do_sample,
    }


def settings_from(current: GenerationSettings, changes: dict[str, Any]) -> GenerationSettings:
    """Validate a partial settings dict from the front end or Python; raise ValueError."""
    fields = settings_dict(current)
    unknown = set(changes) - set(fields)
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}; known: {sorted(fields)}.")
    new = dict(fields, **changes)
    if not isinstance(new["system_prompt"], str):
        raise ValueError("system_prompt must be text.")
    mnt = new["max_new_tokens"]
    if isinstance(mnt, bool) or not isinstance(mnt, int) or not 1 <= mnt <= 32768:
        raise ValueError("max_new_tokens must be a whole number from 1 to 32768.")
    temp = new["temperature"]
    if isinstance(temp, bool) or not isinstance(temp, int | float) or not 0 <= temp <= 5:
        raise ValueError("temperature must be a number from 0 to 5.")
    top_p = new["top_p"]
    if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise ValueError("top_p must be a number above 0 and at most 1.")
    if not isinstance(new["do_sample"], bool):
        raise ValueError("do_sample must be true or false.")
    return GenerationSettings(
        system_prompt=new["system_prompt"],
        max_new_tokens=int(mnt),
        temperature=float(temp),
        top_p=float(top_p),
        do_sample=new["do_sample"],
    )
