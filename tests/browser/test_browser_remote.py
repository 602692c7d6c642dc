"""Issue 12, in real JupyterLab: add a server from the UI, chat with its model, stop a reply,
switch to a local model and back. The server is a real ``transformers serve`` (offline, CPU,
loopback) started by the test, behind the fault proxy, which checks the API key typed into
the form; the key must reach the server and never the page or the widget's state."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_axe import audit, describe
from browser_notebook import NotebookPage, OpenWidget, Screenshot
from playwright.sync_api import expect

from chatwidget.catalog import remote_key
from chatwidget.testing.fault_proxy import FaultProxy
from chatwidget.testing.models import build_model
from chatwidget.testing.transformers_serve import ServedModel, run_transformers_serve

TINY = "demo/tiny-chat"
READY_MS = 90_000
STEP_MS = 30_000
SERVER = "ts"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    folder = build_model(tmp_path_factory.mktemp("served"), "demo/served-chat", "tiny", seed=3)
    with run_transformers_serve(folder) as model:
        yield model


def assert_accessible(nb: NotebookPage, name: str) -> None:
    """axe-core finds nothing in the widget, the Servers section open."""
    result = audit(nb.page, nb.widget.locator(".cw-root"), name)
    assert result["violations"] == [], f"axe-core found, in {name}:\n{describe(result)}"


@pytest.mark.browser
def test_add_a_server_from_the_ui_chat_stop_and_switch_local_and_back(
    open_widget: OpenWidget, served: ServedModel, screenshot: Screenshot, tmp_path: Path
) -> None:
    key = f"sk-browser-{secrets.token_hex(12)}"
    # The kernel reads the key from this file for its own check, so the key is never in a
    # cell's source (which the page shows).
    key_file = tmp_path / "key.txt"
    key_file.write_text(key)
    model = remote_key(SERVER, served.model_id)
    with FaultProxy(served.url, api_key=key) as proxy:
        nb = open_widget(models=[TINY])
        nb.probe("chat.set_settings(max_new_tokens=12)")
        servers = nb.widget.locator("details.cw-servers")
        servers.locator("summary").click()
        form = nb.widget.get_by_role("form", name="Add a server")

        # A bad URL is refused inline, before anything is sent.
        form.get_by_label("Base URL").fill("ftp://nowhere/v1")
        form.get_by_role("button", name="Add server").click()
        expect(form.get_by_role("alert")).to_contain_text("Only http:// and https://")
        assert_accessible(nb, "remote-form-error")

        form.get_by_label("Name").fill(SERVER)
        form.get_by_label("Base URL").fill(proxy.url + "/v1")
        form.get_by_label("API key").fill(key)
        form.get_by_role("button", name="Add server").click()
        expect(form.get_by_label("API key")).to_have_value("")
        item = nb.widget.get_by_role("list", name="Servers").get_by_role("listitem")
        expect(item).to_contain_text("1 model", timeout=STEP_MS)
        expect(item).to_contain_text("API key set")
        group = nb.model_select.locator(f'optgroup[label="{SERVER}"]')
        expect(group.locator("option")).to_have_count(1)
        expect(group.locator("option")).to_contain_text("Available")
        screenshot(nb, "server-added")
        assert_accessible(nb, "remote-server-listed")

        # Pick the remote model: Connecting, then Ready; the row shows the server.
        nb.select_model(model)
        expect(nb.download_row(model)).to_contain_text("Ready", timeout=STEP_MS)
        expect(nb.download_row(model)).to_contain_text(f"Server {SERVER}")
        expect(group.locator("option")).to_contain_text("Active")
        nb.send_message("Hello from the browser")
        reply = nb.assistant_messages.last
        expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)
        expect(reply.locator(".cw-meta-model")).to_have_attribute("title", model)

        # A long reply, stopped: the partial text stays.
        nb.probe("chat.set_settings(max_new_tokens=400)")
        nb.send_message("Tell me a long story")
        long_reply = nb.assistant_messages.last
        expect(long_reply).to_have_attribute("data-status", "streaming", timeout=STEP_MS)
        nb.widget.get_by_role("button", name="Stop", exact=True).click()
        expect(long_reply).to_have_attribute("data-status", "stopped", timeout=STEP_MS)
        screenshot(nb, "remote-stopped")

        # A stream cut mid-reply: the partial text stays, marked, and Retry writes it again.
        proxy.inject("/v1/chat/completions", drop_after=6)
        nb.send_message("This one gets cut off")
        cut = nb.assistant_messages.last
        expect(cut).to_have_attribute("data-status", "error", timeout=STEP_MS)
        expect(cut.locator(".cw-msg-body")).not_to_be_empty()
        retry = nb.widget.get_by_role("button", name="Retry", exact=True)
        expect(retry).to_be_visible()
        screenshot(nb, "remote-cut-off")
        nb.probe("chat.set_settings(max_new_tokens=12)")
        retry.click()
        expect(nb.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)

        # A 429 with Retry-After: the notice shows while the wait lasts, then the reply comes.
        proxy.inject("/v1/chat/completions", status=429, retry_after="2")
        nb.send_message("Are you busy?")
        notice = nb.widget.locator(".cw-remote-notice")
        expect(notice).to_be_visible(timeout=STEP_MS)
        expect(notice).to_contain_text("429")
        screenshot(nb, "remote-429")
        expect(nb.assistant_messages.last).to_have_attribute("data-status", "done", timeout=STEP_MS)
        expect(notice).to_be_hidden(timeout=STEP_MS)

        # Switch to a local model (downloaded from the hub) and back.
        nb.select_model(TINY)
        expect(nb.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
        expect(nb.model_select.locator(f'option[value="{TINY}"]')).to_contain_text("Active")
        nb.send_message("And locally?")
        expect(nb.assistant_messages).to_have_count(5)
        local = nb.assistant_messages.last
        expect(local).to_have_attribute("data-status", "done", timeout=STEP_MS)
        expect(local.locator(".cw-meta-model")).to_have_attribute("title", TINY)
        nb.select_model(model)
        expect(group.locator("option")).to_contain_text("Active", timeout=STEP_MS)
        nb.send_message("Remote again")
        expect(nb.assistant_messages).to_have_count(6)
        again = nb.assistant_messages.last
        expect(again).to_have_attribute("data-status", "done", timeout=STEP_MS)
        expect(again.locator(".cw-meta-model")).to_have_attribute("title", model)
        screenshot(nb, "remote-again")

        kernel = nb.probe(
            "[m['model'] for m in chat.messages if m['role'] == 'assistant']",
            until=lambda v: len(v) == 6,
        )
        assert kernel == [model, model, model, model, TINY, model]
        assert any(r.key_ok for r in proxy.requests)  # the key typed in the form was used
        # The key is nowhere on the page, nor in any trait the kernel holds.
        assert key not in nb.widget.inner_html()
        assert key not in nb.page.content()
        leaked = nb.probe(
            f"open({str(key_file)!r}).read() in _json.dumps(chat.get_state(), default=repr)"
        )
        assert leaked is False
