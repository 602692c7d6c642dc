"""Issues 11 and 14, in real JupyterLab: fit labels per precision before download, the
precision changed in the selector, placement and Unload on a loaded row (with the freed
bytes), and a gated repo whose row offers "Add a token" (no Retry) and then proceeds."""

from __future__ import annotations

import re

import pytest
from browser_notebook import OpenWidget, Screenshot
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_GATED_REPO, DEMO_GATED_TOKEN

TINY = "demo/tiny-chat"
TINY_B = "demo/tiny-chat-b"
READY_MS = 90_000
STEP_MS = 30_000
VERDICT = re.compile(r"(Fits on GPU|Partial offload|CPU only|Won't fit) · needs [\d.]+ [kMG]?B")


@pytest.mark.browser
def test_fit_labels_before_download_precision_placement_and_unload(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget(models=(TINY, TINY_B))
    # Before anything is downloaded, each model's option carries its fit label.
    option_b = nb.model_select.locator(f'option[value="{TINY_B}"]')
    expect(option_b).to_contain_text(
        re.compile(r"Not downloaded .*(Fits on GPU|Partial offload|CPU only|Won't fit)"),
        timeout=STEP_MS,
    )
    whole_weights = [
        r
        for r in hub.requests
        if r.method == "GET" and r.range is None and r.path.endswith(".safetensors")
    ]
    assert not whole_weights, "the estimate must read the weights' headers only"

    hub.rate = 20_000  # B downloads slowly: the precision is changed on its way
    nb.select_model(TINY_B)
    precision = nb.widget.get_by_role("combobox", name="Precision")
    expect(precision).to_have_value("auto")
    for option in ("auto", "bfloat16", "float16", "float32"):
        expect(precision.locator(f'option[value="{option}"]')).to_have_text(VERDICT)
    for option in ("8bit", "4bit"):  # no bitsandbytes + CUDA here: listed, disabled, why
        expect(precision.locator(f'option[value="{option}"]')).to_be_disabled()
    expect(nb.widget.locator(".cw-fit-note")).to_contain_text("Not offered — 8-bit, 4-bit")
    precision.select_option("float32")
    expect(nb.widget.locator(".cw-fit-summary")).to_contain_text(VERDICT)
    kernel = nb.probe(
        f"[s.dtype for s in chat.session.catalog if s.repo_id == {TINY_B!r}]",
        until=lambda v: v == ["float32"],
    )
    assert kernel == ["float32"]
    screenshot(nb, "precision")

    hub.rate = None
    row = nb.download_row(TINY_B)
    expect(row).to_contain_text("Ready", timeout=READY_MS)
    expect(row).to_contain_text(re.compile(r"On (CPU|GPU \d+)( \+ .+)? · [\d.]+ [kMG]?B"))
    expect(option_b).to_contain_text(re.compile(r"Active .*(CPU|GPU \d+)"))
    expect(precision).to_have_value("float32")
    dtype = nb.probe(
        f"str(next(chat._runtime.engine._pool.get({TINY_B!r}).model.parameters()).dtype)"
    )
    assert dtype == "torch.float32"
    screenshot(nb, "loaded")

    row.get_by_role("button", name="Unload").click()
    expect(row).to_contain_text(re.compile(r"Unloaded: freed [\d.]+ [kMG]?B"), timeout=STEP_MS)
    expect(row.get_by_role("button", name="Unload")).to_have_count(0)
    state = nb.probe(
        f"[chat.model_state({TINY_B!r}), chat._runtime.engine.used_bytes()]",
        until=lambda v: v[0] == "Downloaded",
    )
    assert state == ["Downloaded", 0]
    screenshot(nb, "unloaded")


@pytest.mark.browser
def test_gated_row_shows_add_a_token_and_no_retry_and_the_token_lets_it_download(
    open_widget: OpenWidget, hub: LocalHub, screenshot: Screenshot
) -> None:
    nb = open_widget(models=(TINY,))
    add = nb.widget.get_by_role("textbox", name="Add model by repo id")
    add.fill(DEMO_GATED_REPO)
    add.press("Enter")
    row = nb.download_row(DEMO_GATED_REPO)
    expect(row).to_contain_text("Failed", timeout=STEP_MS)
    expect(row).to_contain_text("What to do: Add a token")
    expect(row.get_by_role("button", name="Retry")).to_have_count(0)
    screenshot(nb, "gated")

    row.get_by_role("button", name="Add a token").click()
    field = row.get_by_label("Hugging Face token")
    expect(field).to_have_attribute("type", "password")
    expect(field).to_be_focused()
    field.fill(DEMO_GATED_TOKEN)
    field.press("Enter")
    expect(row).to_contain_text("Ready", timeout=READY_MS)
    expect(row.get_by_label("Hugging Face token")).to_be_hidden()
    assert DEMO_GATED_TOKEN not in nb.widget.inner_html()
    leaked = nb.probe(
        f"[{DEMO_GATED_TOKEN!r} in repr(chat.get_state()), chat.model_state({DEMO_GATED_REPO!r})]"
    )
    assert leaked == [False, "Ready"]
    screenshot(nb, "token-added")
