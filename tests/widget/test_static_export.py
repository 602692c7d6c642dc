"""Where widgets cannot render, a static export shows a readable, escaped summary."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"


def test_nbconvert_html_export_shows_the_conversation_and_models(
    local_hub: LocalHub, tmp_path: Path
) -> None:
    code = [
        "from chatwidget import ChatWidget\n"
        f"chat = ChatWidget(models=[{TINY!r}], endpoint={local_hub.url!r}, "
        f"cache_dir={str(tmp_path / 'cache')!r})\n"
        "chat.set_settings(max_new_tokens=8)\n"
        "chat",
        f"chat.select_model({TINY!r})\nassert chat.wait_until_idle(120)\n"
        "reply = chat.send('<script>alert(1)</script> hello').wait(120)",
        "chat  # displayed again at the end: what a static export shows",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in code])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    # JupyterLab does not save widget state by default; without it, exporters fall back to
    # the richest static output instead of the widget.
    NotebookClient(nb, timeout=300, store_widget_state=False).execute()
    body, _ = HTMLExporter().from_notebook_node(nb)

    assert "chatwidget-static" in body
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; hello" in body
    assert f"<code>{TINY}</code>" in body
    assert "Ready" in body  # the model table, as it was at the last display
    assert "<strong>Assistant</strong> <small>(demo/tiny-chat)</small>" in body
