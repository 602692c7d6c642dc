"""Resilient sync and long conversations, in real JupyterLab.

- Every comm message the kernel sends from a background thread is dropped (as Colab does,
  colabtools #3373): download progress and a streamed reply still reach the screen, at most
  about a second late, through the snapshots the front end asks for.
- A conversation of 1,000 messages, all of them loaded on the page, stays responsive:
  typing and Send answer within 100 ms, measured in the page.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_notebook import NotebookPage, OpenWidget
from playwright.sync_api import expect

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
SMALL = "demo/small-chat"
READY_MS = 90_000
STEP_MS = 30_000
#: "At most about 1 s late": the 1 s the front end waits before it asks, plus the round trip
#: and drawing, on a shared 2-core machine.
LATE_S = 1.8

#: Records, with wall-clock times (comparable with the kernel's time.time()), every value
#: the progress bar of `repo` shows and every text length and status of the last reply.
_SCREEN_RECORDER = """
(repo) => {
  const rec = { progress: [], reply: [] };
  window.__screen = rec;
  const scan = () => {
    const now = Date.now() / 1000;
    const row = document.querySelector(`.cw-dl-row[aria-label="${repo}"] [role=progressbar]`);
    if (row) {
      const v = Number(row.getAttribute('aria-valuenow'));
      const last = rec.progress[rec.progress.length - 1];
      if (!last || last[1] !== v) rec.progress.push([now, v]);
    }
    const replies = document.querySelectorAll('article.cw-msg-assistant');
    const msg = replies[replies.length - 1];
    if (msg) {
      const length = (msg.querySelector('.cw-msg-body').textContent || '').length;
      const last = rec.reply[rec.reply.length - 1];
      const status = msg.dataset.status;
      if (!last || last[1] !== length || last[2] !== status || last[3] !== msg.dataset.id) {
        rec.reply.push([now, length, msg.dataset.status, msg.dataset.id]);
      }
    }
  };
  new MutationObserver(scan).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}
"""

_KERNEL_RECORDER = """
import time as _t
from chatwidget.orchestrator import ProgressChanged as _P
from chatwidget.testing.comm_faults import drop_background_messages as _drop
kernel_log = {"progress": [], "pieces": [], "closed": []}
chat.subscribe(lambda e: isinstance(e, _P) and kernel_log["progress"].append(
    (_t.time(), 100 * e.progress.bytes_done / max(1, e.progress.bytes_total))))
_deltas = chat.session.deltas
_append, _close = _deltas.append, _deltas.close
def _logged_append(mid, piece):
    _append(mid, piece)
    kernel_log["pieces"].append(_t.time())
def _logged_close(mid):
    kernel_log["closed"].append(_t.time())
    return _close(mid)
_deltas.append, _deltas.close = _logged_append, _logged_close
harness = _drop(chat)
"""


def run(nb: NotebookPage, code: str) -> None:
    """Run statements in the kernel (through a probe) and wait until they ran."""
    assert nb.probe(f"exec({code!r}) or True")


def lag(kernel_times: list[float], screen_times: list[float]) -> float:
    """The longest wait from a kernel change to the next change on screen."""
    worst = 0.0
    for t in kernel_times:
        later = [s for s in screen_times if s >= t]
        assert later, f"nothing reached the screen after the kernel changed at {t}"
        worst = max(worst, later[0] - t)
    return worst


@pytest.mark.browser
def test_dropped_background_updates_still_reach_the_screen_within_about_a_second(
    open_widget: OpenWidget, hub: LocalHub
) -> None:
    nb = open_widget(models=(TINY, SMALL))
    nb.select_model(TINY)
    expect(nb.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    run(nb, _KERNEL_RECORDER)
    assert nb.probe("harness.dropped") == 0
    nb.page.evaluate(_SCREEN_RECORDER, SMALL)

    hub.rate = 3_000_000  # demo/small-chat: about 9 s
    nb.select_model(SMALL)
    expect(nb.download_row(SMALL)).to_contain_text("Downloading", timeout=STEP_MS)
    expect(nb.download_row(SMALL)).to_contain_text("Ready", timeout=READY_MS)
    hub.rate = None
    expect(nb.model_select.locator(f'option[value="{SMALL}"]')).to_contain_text("Active")

    nb.probe("chat.set_settings(max_new_tokens=400) or True")
    nb.send_message("Tell me a long story about the sea")
    reply = nb.assistant_messages.last
    expect(reply).to_have_attribute("data-status", "done", timeout=STEP_MS)

    kernel: dict[str, Any] = nb.probe("kernel_log")
    screen: dict[str, Any] = nb.page.evaluate("() => window.__screen")
    dropped = nb.probe("harness.dropped")
    assert dropped > 20, "the harness should have dropped the publisher's messages"

    # Download progress: every value the kernel reported was on screen within ~1 s.
    shown = [(t, v) for t, v in screen["progress"]]
    assert len({v for _, v in shown if 0 < v < 100}) >= 3, f"progress did not move: {shown}"
    worst_progress = 0.0
    for t, percent in kernel["progress"]:
        later = [s for s, v in shown if v >= min(int(percent), 99)]
        assert later, f"{percent:.0f}% never reached the screen"
        worst_progress = max(worst_progress, later[0] - t)
    # The reply: its text grew on screen while it streamed, and each piece the kernel
    # produced was followed by a change on screen within ~1 s; the end too.
    reply_id = reply.get_attribute("data-id")
    ours = [r for r in screen["reply"] if r[3] == reply_id]
    streaming = {length for _, length, status, _ in ours if status == "streaming" and length}
    assert len(streaming) >= 2, f"the reply did not stream on screen: {ours}"
    times = [t for t, *_ in ours]
    worst_reply = lag(kernel["pieces"], times)
    done_at = min(t for t, _, status, _ in ours if status == "done")
    end_lag = done_at - kernel["closed"][-1]
    print(
        f"dropped {dropped} background messages; worst lag: progress {worst_progress:.2f} s, "
        f"streamed text {worst_reply:.2f} s, end of reply {end_lag:.2f} s"
    )
    assert worst_progress <= LATE_S
    assert worst_reply <= LATE_S
    assert end_lag <= LATE_S


#: Measures, in the page, how long the widget takes to answer the user: from each keydown
#: in the message box to the frame that shows the typed character, and from the click on
#: Send to the frame after it (the composer cleared), to the user's message on screen (shown
#: at once while it is sent) and to the kernel's row for it (a round trip through the kernel).
_LATENCY_RECORDER = """
() => {
  const root = [...document.querySelectorAll('.jp-OutputArea-output .cw-root')].pop();
  const box = root.querySelector('textarea[aria-label="Message"]');
  const send = [...root.querySelectorAll('button')].find((b) => b.textContent === 'Send');
  const list = root.querySelector('.cw-messages');
  const rec = { typing: [], sends: [] };
  window.__latency = rec;
  let down = null;
  box.addEventListener('keydown', () => { down = performance.now(); }, true);
  box.addEventListener('input', () => {
    const t0 = down;
    requestAnimationFrame(() => { if (t0 !== null) rec.typing.push(performance.now() - t0); });
  });
  send.addEventListener('click', () => {
    const t0 = performance.now();
    const text = box.value;
    const users = () => list.querySelectorAll('article.cw-msg-user');
    const before = users().length;
    const entry = { cleared: null, shown: null, confirmed: null };
    rec.sends.push(entry);
    requestAnimationFrame(() => { if (box.value === '') entry.cleared = performance.now() - t0; });
    const observer = new MutationObserver(() => {
      const all = users();
      const last = all[all.length - 1];
      if (all.length > before && last.textContent.includes(text)) {
        if (entry.shown === null) entry.shown = performance.now() - t0;
        if (last.dataset.id) {  // the kernel's own row, not the one shown while sending
          entry.confirmed = performance.now() - t0;
          observer.disconnect();
        }
      }
    });
    observer.observe(list, { childList: true, subtree: true, characterData: true });
  }, true);
}
"""


@pytest.mark.browser
def test_a_conversation_of_1000_messages_stays_responsive(open_widget: OpenWidget) -> None:
    nb = open_widget(models=(TINY,))
    nb.select_model(TINY)
    expect(nb.download_row(TINY)).to_contain_text("Ready", timeout=READY_MS)
    run(
        nb,
        "from chatwidget.testing.conversations import seed_conversation\n"
        f"seed_conversation(chat, 1000, model={TINY!r})\n"
        "chat.set_settings(max_new_tokens=32)",
    )
    expect(nb.user_messages.last).to_contain_text("question 998")
    messages = nb.widget.locator("article.cw-msg")
    earlier = nb.widget.get_by_role("button", name=re.compile(r"Show earlier messages \(\d+"))
    for _ in range(20):  # the page before the last opens by itself, then 100 per click
        count = messages.count()
        if count >= 1000:
            break
        earlier.click(timeout=STEP_MS)
        expect(messages).not_to_have_count(count, timeout=STEP_MS)
    expect(messages).to_have_count(1000)
    expect(earlier).to_be_hidden()
    expect(nb.widget.locator("article.cw-msg").first).to_contain_text("question 0:")

    nb.page.evaluate(_LATENCY_RECORDER)
    kernel_rows = nb.widget.locator("article.cw-msg-user[data-id]")  # not the one being sent
    typed = 0
    for i in range(3):
        replies = nb.assistant_messages.count()
        text = f"hello number {i}"
        nb.message_box.press_sequentially(text)
        typed += len(text)
        # Every key's frame is recorded before Send is clicked (a user sees the text first):
        # else, on a loaded machine, the last key's frame can come after the click and its
        # time would include the Send's work, which ``sends`` measures on its own.
        nb.page.wait_for_function(f"() => window.__latency.typing.length >= {typed}")
        nb.send_button.click()
        expect(kernel_rows.last).to_contain_text(f"hello number {i}", timeout=STEP_MS)
        expect(nb.assistant_messages).to_have_count(replies + 1, timeout=STEP_MS)
        expect(nb.assistant_messages.last).to_have_attribute("data-status", "done")
    latency: dict[str, Any] = nb.page.evaluate("() => window.__latency")
    on_page = nb.widget.locator("article.cw-msg").count()
    typing, sends = latency["typing"], latency["sends"]
    print(
        f"{on_page} messages on the page; typing: {len(typing)} keys, worst "
        f"{max(typing):.1f} ms; Send: composer cleared within "
        f"{[round(s['cleared'], 1) for s in sends]} ms, message shown within "
        f"{[round(s['shown'], 1) for s in sends]} ms, the kernel's row within "
        f"{[round(s['confirmed'], 1) for s in sends]} ms"
    )
    print("typing, ms:", [round(t) for t in typing])
    assert on_page == 1006
    assert len(typing) >= 3 * len("hello number 0")
    assert max(typing) <= 100
    assert len(sends) == 3
    assert all(s["cleared"] is not None and s["cleared"] <= 100 for s in sends)
    assert all(s["shown"] is not None and s["shown"] <= 100 for s in sends)
    assert all(s["confirmed"] is not None and s["confirmed"] <= 1000 for s in sends)
    assert nb.probe("len(chat.messages)") == 1006
