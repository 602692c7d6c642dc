"""Issue 13: ``mo.ui.anywidget(ChatWidget(...))`` in a real marimo server, edit and run modes.

The test serves ``notebooks/marimo_quickstart.py`` as shipped (offline: the test's local hub
and tiny models), and a user in Chromium: picks a model in the selector, chats on it while a
second one downloads (progress rises), watches the reply stream, stops one, keeps a
download through the confirmation dialog, sees "Switched to ..." when the second model is
in, and cancels a third download after confirming. There is no ipykernel in marimo, and
state set from the kernel's threads does not rerun cells (marimo #5080): the widget must
not need either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_axe import audit, describe
from browser_marimo import MarimoPage, MarimoServer, Mode
from browser_notebook import luminance
from playwright.sync_api import Page, expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
TINY_B = "demo/tiny-chat-b"
SMALL = "demo/small-chat"
READY_MS = 90_000
STEP_MS = 30_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def offline_env(hub: LocalHub, tmp_path: Path) -> dict[str, str]:
    """The notebook's environment: offline, on the test hub, with a fresh HF cache."""
    return {
        "CHATWIDGET_OFFLINE": "1",
        "CHATWIDGET_HUB_URL": hub.url,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(params=["edit", "run"])
def marimo(request: pytest.FixtureRequest, hub: LocalHub, tmp_path: Path) -> Iterator[MarimoServer]:
    """The marimo quickstart served by ``marimo edit`` or ``marimo run`` on the test hub."""
    mode: Mode = request.param
    server = MarimoServer(tmp_path, mode, offline_env(hub, tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def marimo_dark(hub: LocalHub, tmp_path: Path) -> Iterator[MarimoServer]:
    """The marimo quickstart in ``marimo edit`` with marimo's dark theme."""
    server = MarimoServer(tmp_path, "edit", offline_env(hub, tmp_path), theme="dark")
    server.start()
    yield server
    server.stop()


def set_max_new_tokens(mo: MarimoPage, value: int) -> None:
    """Through the widget's Settings, as a user does (no notebook cell to run here)."""
    mo.widget.locator("summary", has_text="Settings").click()
    field = mo.widget.get_by_label("Max new tokens")
    field.fill(str(value))
    field.press("Tab")  # commits the change


@pytest.mark.browser
def test_marimo_selector_progress_streaming_stop_cancel_and_switch(
    marimo: MarimoServer, hub: LocalHub, browser_page: Page
) -> None:
    mo = MarimoPage(browser_page)
    mo.open_url(marimo.url)
    shot = SCREENSHOTS / f"test_marimo-{marimo.mode}"

    # The selector: a model that is not downloaded is fetched, loaded and switched in.
    mo.select_model(TINY)
    expect(mo.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    mo.wait_for_toast(f"Switched to {TINY}", STEP_MS)
    expect(mo.model_select.locator(f'option[value="{TINY}"]')).to_contain_text("Active")
    # Replies long enough to watch them stream: A stops at its 512-token context (about
    # 0.6 s here), B writes 2,000 tokens (about 15 s), time enough to press Stop.
    set_max_new_tokens(mo, 2000)

    # Download progress while chatting: the reply streams on A while B downloads.
    hub.rate = 1_000_000  # demo/small-chat (about 27 MB) takes about half a minute
    mo.select_model(SMALL)
    expect(mo.download_row(SMALL)).to_contain_text("Downloading", timeout=STEP_MS)
    expect(mo.pending_label).to_have_text(re.compile(r"Waiting for .*[Ss]mall"))
    first = mo.wait_for_progress_above(SMALL, 0, STEP_MS)
    mo.send_message("Tell me about the weather")
    reply = mo.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)
    expect(reply.locator(".cw-meta-model")).to_have_attribute("title", TINY)
    assert streamed_lengths(mo, reply.get_attribute("data-id")) >= 2
    later = mo.wait_for_progress_above(SMALL, first, STEP_MS)
    assert 0 < first < later < 100
    expect(mo.download_row(SMALL)).to_contain_text("Downloading")  # still on its way
    mo.screenshot(shot.with_name(f"{shot.name}-chat-while-downloading.png"))

    # Cancel asks first: "Keep downloading" keeps it.
    dialog = mo.widget.get_by_role("alertdialog")
    mo.download_row(SMALL).get_by_role("button", name="Cancel", exact=True).click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(SMALL)
    mo.screenshot(shot.with_name(f"{shot.name}-confirm-cancel.png"))
    dialog.get_by_role("button", name="Keep downloading").click()
    expect(dialog).to_be_hidden()
    expect(mo.download_row(SMALL)).to_contain_text("Downloading")

    # B comes in: the conversation switches, and a toast says so.
    hub.rate = None
    expect(mo.download_row(SMALL)).to_contain_text("Ready", timeout=READY_MS)
    mo.wait_for_toast(f"Switched to {SMALL}", STEP_MS)
    expect(mo.model_select).to_have_value(SMALL)
    expect(mo.user_messages).to_have_count(1)  # the history is kept across the switch

    # Stop keeps what B wrote so far.
    mo.send_message("And now a long story, please")
    reply = mo.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "streaming", timeout=STEP_MS)
    mo.page.wait_for_function(
        """(id) => new Set(window.__cw.replies
              .filter((r) => r.id === id && r.status === 'streaming' && r.length > 0)
              .map((r) => r.length)).size >= 3""",
        arg=reply.get_attribute("data-id"),
        timeout=STEP_MS,
    )
    mo.widget.get_by_role("button", name="Stop", exact=True).click()
    expect(reply).to_have_attribute("data-status", "stopped", timeout=STEP_MS)
    expect(reply.locator(".cw-meta-model")).to_have_attribute("title", SMALL)
    expect(reply.locator(".cw-msg-body")).not_to_be_empty()

    # Cancel, confirmed, ends in Canceled with Retry offered.
    hub.rate = 20_000  # demo/tiny-chat-b (about 140 kB) takes several seconds
    mo.select_model(TINY_B)
    row = mo.download_row(TINY_B)
    expect(row).to_contain_text(re.compile("Queued|Downloading"), timeout=STEP_MS)
    row.get_by_role("button", name="Cancel", exact=True).click()
    dialog.get_by_role("button", name="Cancel download").click()
    expect(row).to_contain_text("Canceled", timeout=STEP_MS)
    expect(row.get_by_role("button", name="Retry", exact=True)).to_be_visible()
    assert f"Switched to {TINY_B}" not in mo.toasts_seen()
    mo.screenshot(shot.with_name(f"{shot.name}-canceled.png"))
    assert_no_violations(mo, f"marimo-{marimo.mode}-light-canceled")


@pytest.mark.browser
def test_marimo_dark_theme_gives_a_dark_widget_with_no_axe_violations(
    marimo_dark: MarimoServer, browser_page: Page
) -> None:
    """marimo has no JupyterLab theme variables: the widget follows its color-scheme."""
    mo = MarimoPage(browser_page)
    mo.open_url(marimo_dark.url)
    mo.select_model(TINY)
    expect(mo.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    mo.send_message("Hello in the dark")
    expect(mo.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)
    colors = mo.colors()
    assert luminance(colors["background"]) < 0.1, f"not a dark background: {colors}"
    assert luminance(colors["text"]) > 0.5, f"not light text: {colors}"
    expect(mo.toasts).to_have_count(0, timeout=10_000)
    mo.screenshot(SCREENSHOTS / "test_marimo-edit-dark.png")
    assert_no_violations(mo, "marimo-edit-dark-idle")


def assert_no_violations(mo: MarimoPage, name: str) -> None:
    result = audit(mo.page, mo.widget, name)
    assert result["passes"] > 0, result
    assert not result["violations"], (
        f"axe-core {result['version']} found violations in {name}:\n{describe(result)}"
    )


def streamed_lengths(mo: MarimoPage, reply_id: str | None) -> int:
    """How many different lengths the reply showed while it was streaming."""
    history = [r for r in mo.reply_history() if r["id"] == reply_id]
    return len({r["length"] for r in history if r["status"] == "streaming" and r["length"]})
