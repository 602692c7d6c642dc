"""A readable Markdown summary for places where widgets cannot render.

nbconvert's HTML export and GitHub's notebook preview show this instead of the widget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatwidget.format import format_bytes


def _escape(text: str) -> str:
    """Escape Markdown/HTML so a model's text is shown as text."""
    out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*_[]#|":
        out = out.replace(ch, "\\" + ch)
    return out


def summary_markdown(state: Mapping[str, Any]) -> str:
    """Summarise the widget's trait values: models, downloads and the active conversation."""
    lines = ["**chatwidget**: interactive chat (a live Jupyter kernel shows the full widget)", ""]
    active_id = state.get("active_conversation")
    conv = next((c for c in state.get("conversations", []) if c["id"] == active_id), None)
    if conv is not None:
        model = conv.get("active_model") or "none yet"
        lines.append(f"Conversation *{_escape(conv['title'])}*, model: `{model}`")
        if conv.get("requested_model") and conv["requested_model"] != conv.get("active_model"):
            lines.append(f" (waiting for `{conv['requested_model']}`)")
        lines.append("")
        for m in conv.get("messages", []):
            who = {"user": "You", "assistant": "Assistant", "system": "System"}[m["role"]]
            meta = f" ({m['model']})" if m.get("model") else ""
            lines.append(f"> **{who}**{meta}: {_escape(m['content'])}")
            lines.append(">")
        lines.append("")
    models = state.get("models", [])
    if models:
        lines.append("| Model | State | Size |")
        lines.append("|---|---|---|")
        for row in models:
            size = format_bytes(row["size_bytes"]) if row.get("size_bytes") else ""
            lines.append(f"| `{row['repo_id']}` | {row['state']} | {size} |")
        lines.append("")
    downloads = state.get("downloads", [])
    if downloads:
        lines.append("Downloads: " + ", ".join(f"`{d['repo_id']}` {d['state']}" for d in downloads))
    return "\n".join(lines).rstrip() + "\n"
