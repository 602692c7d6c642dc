"""Per-token work does not grow with the history: counted, not timed.

The same turn (a fixed number of tokens: tiny models never stop early) in a conversation of
10 messages and of 1,000, on the real stack: what goes over the comm, and what the publisher
renders. The 512-token context of the tiny model means the 1,000-message turn also trims.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import pytest

from chatwidget.session import Message
from chatwidget.testing.models import DEMO_TINY_REPO
from chatwidget.widget import ChatWidget
from chatwidget.widget.protocol import PAGE_SIZE
from tests.widget.frontend import FrontEnd

TOKENS = 128  # a quarter of the context: every turn gets all of them, trimmed or not


class Turn:
    """What one turn sent and rendered."""

    def __init__(self, sent: list[tuple[float, dict[str, Any], int]], renders: Counter[str]):
        self.bytes = sum(size for _, _, size in sent)
        self.deltas = [
            d["content"] for _, d, _ in sent if d.get("content", {}).get("kind") == "delta"
        ]
        self.batches = [d["state"] for _, d, _ in sent if d.get("method") == "update"]
        self.renders = renders

    @property
    def rows(self) -> int:
        """Message rows sent in trait batches (the transcript's page)."""
        return sum(len(b["transcript"]["messages"]) for b in self.batches if "transcript" in b)


def one_turn(chat: ChatWidget, history: int) -> Turn:
    session = chat.session
    chat.new_conversation()
    for i in range(history):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"message {i}: the quick brown fox jumps over the lazy dog"
        session.store.append(session.conversation_id, Message(f"h{i}", role, text))
    session._changed("transcript")
    assert chat.wait_until_idle(30)
    renders: Counter[str] = Counter()
    render = chat._render

    def counting(parts: Collection[Any]) -> dict[str, Any]:
        renders.update(parts)
        return render(parts)

    chat._render = counting  # type: ignore[method-assign]
    front = FrontEnd(chat)
    handle = chat.send("One more question, please.")
    handle.wait(120)
    assert chat.wait_until_idle(30)
    chat._render = render  # type: ignore[method-assign]
    assert handle.result is not None
    assert handle.result.usage.new_tokens == TOKENS
    return Turn(front.since(0), renders)


@pytest.fixture
def chat(make_chat: Callable[..., ChatWidget]) -> ChatWidget:
    widget = make_chat()
    widget.select_model(DEMO_TINY_REPO)
    assert widget.wait_until_idle(120)
    widget.set_settings(max_new_tokens=TOKENS)
    widget.send("warm up").wait(60)
    return widget


def test_a_turn_at_1000_messages_sends_and_renders_what_a_turn_at_10_does(
    chat: ChatWidget,
) -> None:
    short, long = one_turn(chat, 10), one_turn(chat, 1000)
    # The transcript goes out at the two turn boundaries, as the last page only.
    assert short.rows == long.rows <= 2 * PAGE_SIZE
    assert long.renders["transcript"] == short.renders["transcript"] <= 3
    # Nothing else is rendered more often for a long history.
    for part in long.renders:
        assert long.renders[part] <= short.renders[part] + 1, (part, long.renders, short.renders)
    # Streamed text goes out as a handful of coalesced deltas, whose number does not depend
    # on the history (it depends on timing only), and no more bytes than in a short chat.
    for turn in (short, long):
        assert len(turn.deltas) <= TOKENS
        assert turn.bytes / TOKENS <= 200, turn.bytes
    delta_bytes = 160 * abs(len(long.deltas) - len(short.deltas))  # what timing may change
    assert long.bytes <= short.bytes * 1.1 + delta_bytes


def test_streaming_tokens_touch_only_the_delta_stream(
    make_chat: Callable[..., ChatWidget], small_repo: str
) -> None:
    """Per token the kernel appends a piece to the delta stream: the store keeps the reply
    empty until the turn ends, and no trait batch carries the transcript while it streams.
    (On the small model: the tiny one answers in a tenth of a second.)"""
    chat = make_chat(models=[small_repo])
    chat.select_model(small_repo)
    assert chat.wait_until_idle(120)
    chat.set_settings(max_new_tokens=300)
    session = chat.session
    pieces = session.deltas.pieces
    front = FrontEnd(chat)
    handle = chat.send("Stream, please")
    assert handle.wait_for_first_token(60)
    reply = session.messages()[-1]
    assert reply.status == "streaming"
    assert reply.content == ""  # the store is written once, when the reply ends
    handle.wait(60)
    assert chat.wait_until_idle(30)
    assert session.deltas.pieces - pieces >= 5  # text comes in pieces, a few tokens each
    assert front.deltas()
    batches = [d["state"] for d in front.messages() if d.get("method") == "update"]
    with_transcript = [b for b in batches if "transcript" in b]
    assert len(with_transcript) == 2  # the turn's start and its end
    assert with_transcript[0]["transcript"]["messages"][-1]["status"] == "streaming"
    assert with_transcript[1]["transcript"]["messages"][-1]["status"] == "done"


def test_streamed_text_wakes_no_thread(
    make_chat: Callable[..., ChatWidget], small_repo: str
) -> None:
    """Waking another thread in the middle of a generation makes the two take turns with the
    interpreter (it cost 64-token turns 1-2% each). So a local reply's text is sent by the
    reply thread itself as it is decoded, and the first history checkpoint is scheduled
    before the reply starts."""
    chat = make_chat(models=[small_repo])
    chat.select_model(small_repo)
    assert chat.wait_until_idle(120)
    chat.set_settings(max_new_tokens=300)
    chat.send("warm up").wait(60)
    assert chat.wait_until_idle(30)
    publisher = chat._publisher
    assert publisher is not None
    senders: list[tuple[str, float]] = []
    pokes: list[tuple[str, float]] = []
    schedules: list[str] = []
    publish = chat.comm.publish_msg
    poke = publisher.poke
    store = chat.history.store
    schedule = store.schedule

    def recording_publish(msg_type: str, data: Any = None, **kwargs: Any) -> Any:
        if isinstance(data, dict) and data.get("content", {}).get("kind") == "delta":
            senders.append((threading.current_thread().name, time.perf_counter()))
        return publish(msg_type, data, **kwargs)

    def recording_poke() -> int:
        pokes.append((threading.current_thread().name, time.perf_counter()))
        return poke()

    def recording_schedule(*args: Any) -> None:
        schedules.append(threading.current_thread().name)
        schedule(*args)

    chat.comm.publish_msg = recording_publish  # type: ignore[method-assign]
    publisher.poke = recording_poke  # type: ignore[method-assign]
    store.schedule = recording_schedule  # type: ignore[method-assign]
    handle = chat.send("Stream, please")
    handle.wait(60)
    reply_thread = chat.session._replies._name
    assert chat.wait_until_idle(30)
    assert len(senders) >= 5, senders  # about a second of text, a delta every 50 ms
    # sent from the reply thread as it decodes (first piece at once, then every interval);
    # the last piece may come within the interval of the one before: the publisher sends it
    assert {name for name, _ in senders[:-1]} == {reply_thread}, senders
    # the reply thread pokes the publisher before generating (the turn's start) and after
    # (that last piece, and the turn's end), never while it generates
    inline = [t for name, t in senders if name == reply_thread]
    first, last = inline[0], inline[-1]
    assert not [t for name, t in pokes if name == reply_thread and first < t < last], pokes
    # the first checkpoint was scheduled when the reply began, so the reply thread
    # schedules at most one per checkpoint interval after that
    assert handle.result is not None
    intervals = handle.result.usage.duration_s / chat.history.checkpoint_interval
    assert schedules[0] == "MainThread"
    assert schedules.count(reply_thread) <= intervals, (schedules, intervals)
