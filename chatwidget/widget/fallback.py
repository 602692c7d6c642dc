"""A readable summary for places where widgets cannot render.

nbconvert's HTML export and GitHub's notebook preview cannot run the widget's JavaScript;
they show the richest static output instead: the HTML (or Markdown) built here from the
widget's state at the moment it was displayed (the trait values, plus every message of the
active conversation as ``messages``). Display the widget again at the end
of a notebook (``chat`` in a last cell) and a static export shows the whole conversation.
All model and user text is escaped: it is shown as text, never as markup.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from chatwidget.format import format_bytes

_WHO = {"user": "You", "assistant": "Assistant", "system": "System"}


def _md(text: str) -> str:
    """Escape Markdown and HTML so a model's text is shown as text."""
    out = html.escape(text, quote=False)
    for ch in "\\`*_[]#|":
        out = out.replace(ch, "\\" + ch)
    return out


def _active(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The active conversation's row, with its ``messages`` (every one, from ``state``)."""
    active_id = state.get("active_conversation")
    row = next((c for c in state.get("conversations", []) if c["id"] == active_id), None)
    return None if row is None else {**row, "messages": state.get("messages", [])}


def _size(row: Mapping[str, Any]) -> str:
    return format_bytes(row["size_bytes"]) if row.get("size_bytes") else ""


def summary_markdown(state: Mapping[str, Any]) -> str:
    """Markdown: the active conversation, the models and the downloads."""
    lines = ["**chatwidget**: interactive chat (a live Jupyter kernel shows the full widget)", ""]
    conv = _active(state)
    if conv is not None:
        lines.append(f"Conversation *{_md(conv['title'])}*, model: `{conv.get('active_model')}`")
        if conv.get("requested_model") and conv["requested_model"] != conv.get("active_model"):
            lines.append(f" (waiting for `{conv['requested_model']}`)")
        lines.append("")
        for m in conv.get("messages", []):
            meta = f" ({m['model']})" if m.get("model") else ""
            lines.append(f"> **{_WHO[m['role']]}**{meta}: {_md(m['content'])}")
            lines.append(">")
        lines.append("")
    models = state.get("models", [])
    if models:
        lines += ["| Model | State | Size |", "|---|---|---|"]
        lines += [f"| `{r['repo_id']}` | {r['state']} | {_size(r)} |" for r in models]
        lines.append("")
    downloads = state.get("downloads", [])
    if downloads:
        lines.append("Downloads: " + ", ".join(f"`{d['repo_id']}` {d['state']}" for d in downloads))
    return "\n".join(lines).rstrip() + "\n"


def summary_html(state: Mapping[str, Any]) -> str:
    """The same summary as self-contained HTML (escaped text, no script, no styles needed)."""
    esc = html.escape
    parts = [
        '<div class="chatwidget-static">',
        "<p><strong>chatwidget</strong>: interactive chat "
        "(a live Jupyter kernel shows the full widget)</p>",
    ]
    conv = _active(state)
    if conv is not None:
        model = esc(str(conv.get("active_model")))
        waiting = ""
        if conv.get("requested_model") and conv["requested_model"] != conv.get("active_model"):
            waiting = f" (waiting for <code>{esc(conv['requested_model'])}</code>)"
        title = esc(conv["title"])
        parts.append(f"<p>Conversation <em>{title}</em>, model: <code>{model}</code>{waiting}</p>")
        for m in conv.get("messages", []):
            meta = f" <small>({esc(m['model'])})</small>" if m.get("model") else ""
            parts.append(
                f"<blockquote><strong>{_WHO[m['role']]}</strong>{meta}: "
                f'<span style="white-space: pre-wrap">{esc(m["content"])}</span></blockquote>'
            )
    models = state.get("models", [])
    if models:
        rows = "".join(
            f"<tr><td><code>{esc(r['repo_id'])}</code></td><td>{esc(r['state'])}</td>"
            f"<td>{esc(_size(r))}</td></tr>"
            for r in models
        )
        parts.append(f"<table><tr><th>Model</th><th>State</th><th>Size</th></tr>{rows}</table>")
    downloads = state.get("downloads", [])
    if downloads:
        items = ", ".join(f"<code>{esc(d['repo_id'])}</code> {esc(d['state'])}" for d in downloads)
        parts.append(f"<p>Downloads: {items}</p>")
    parts.append("</div>")
    return "\n".join(parts)
