"""Issue 14, in real JupyterLab: the Compare view streams two columns side by side, and a
model that is still downloading shows its lifecycle state in its column until it is Ready."""

from __future__ import annotations

import re

import pytest
from browser_axe import audit, describe
from browser_notebook import NotebookPage, OpenWidget, Screenshot
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
SMALL = "demo/small-chat"
READY_MS = 90_000
STEP_MS = 30_000

#: Records every (column, status, state, text length) a Compare column went through.
_COLUMN_RECORDER_JS = """
(root) => {
  window.__cwColumns = [];
  const scan = () => {
    for (const col of root.querySelectorAll('.cw-compare-column')) {
      const body = col.querySelector('.cw-compare-body');
      const entry = { column: Number(col.dataset.column), status: col.dataset.status,
                      state: col.dataset.state, length: (body.textContent || '').trim().length };
      const last = window.__cwColumns.filter((c) => c.column === entry.column).pop();
      if (!last || last.status !== entry.status || last.state !== entry.state
          || last.length !== entry.length) window.__cwColumns.push(entry);
    }
  };
  new MutationObserver(scan).observe(root, {
    subtree: true, childList: true, characterData: true, attributes: true,
    attributeFilter: ['data-status', 'data-state'],
  });
  scan();
}
"""


def compare_region(nb: NotebookPage):  # type: ignore[no-untyped-def]
    return nb.widget.get_by_role("region", name="Compare models")


@pytest.mark.browser
def test_compare_streams_two_columns_and_a_downloading_model_shows_its_state(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget(models=(TINY, SMALL))
    nb.probe("chat.set_settings(max_new_tokens=300)")  # long enough to stream visibly
    hub.rate = 1_500_000  # demo/small-chat takes about 18 s: its column shows Downloading

    toggle = nb.widget.locator(".cw-compare-toggle")
    expect(toggle).to_have_accessible_name("Compare")
    toggle.click()
    region = compare_region(nb)
    expect(region).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(toggle).to_have_accessible_name("Back to chat")
    region.get_by_label("Model 1").select_option(TINY)
    region.get_by_label("Model 2").select_option(SMALL)
    region.get_by_label("Prompt").fill("Tell me about the weather")
    region.locator(".cw-compare-columns").evaluate(_COLUMN_RECORDER_JS)
    region.get_by_role("button", name="Start comparison").click()

    columns = region.locator(".cw-compare-column")
    expect(columns).to_have_count(2, timeout=STEP_MS)
    second = columns.nth(1)
    expect(second).to_contain_text(re.compile("Queued|Downloading"), timeout=STEP_MS)
    expect(second).to_have_attribute("data-state", "Downloading", timeout=STEP_MS)
    expect(region.locator(".cw-compare-mode")).to_contain_text("One after another")
    screenshot(nb, "compare-downloading")
    # The tiny model's column streams and ends while the other model is still on its way.
    expect(columns.nth(0)).to_have_attribute("data-status", "done", timeout=READY_MS)
    expect(second).to_have_attribute("data-state", "Downloading")

    hub.rate = None
    expect(second).to_have_attribute("data-status", "done", timeout=READY_MS)
    for i in range(2):
        stats = columns.nth(i).locator(".cw-compare-stats")
        expect(stats).to_contain_text("TTFT")
        expect(stats).to_contain_text("tok/s")
        expect(stats).to_contain_text("tokens")
    history = region.evaluate("() => window.__cwColumns")
    for i in range(2):
        lengths = {c["length"] for c in history if c["column"] == i and c["status"] == "streaming"}
        assert len(lengths - {0}) >= 2, f"column {i} did not stream in pieces: {history}"
    states = [c["state"] for c in history if c["column"] == 1]
    assert "Downloading" in states, states
    assert states[-1] == "Ready", states
    expect(region.get_by_role("button", name="Export Markdown")).to_be_visible()
    screenshot(nb, "compare-done")

    result = audit(nb.page, nb.widget, "compare-done")
    assert result["passes"] > 0, result
    assert result["violations"] == [], describe(result)

    # Python agrees; comparing changed no conversation's model.
    kernel = nb.probe(
        "[chat.active_model, chat.requested_model, "
        "[r.model for r in chat.comparisons()[-1].results], "
        "[r.status for r in chat.comparisons()[-1].results]]",
        until=lambda v: bool(v[2]),
    )
    assert kernel == [None, None, [TINY, SMALL], ["done", "done"]]
