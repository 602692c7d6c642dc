"""Publisher: one writer thread, only what changed, coalesced, every message numbered."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from typing import Any

from chatwidget.session.deltas import DeltaStream
from chatwidget.widget.sync import Publisher


class Source:
    """Plays the session (what changed, the values, streamed text) and the widget (sinks)."""

    def __init__(self, **kwargs: Any) -> None:
        self.values: dict[str, Any] = {"n": 0}
        self.changed: set[str] = {"n"}
        self.lock = threading.Lock()
        self.rendered: list[set[str]] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []  # ("traits" | "custom", message)
        self.threads: set[str] = set()
        self.fail_next = False
        self.deltas = DeltaStream(self.poke)
        self.pub = Publisher(
            take_changes=self.take,
            render=self.render,
            apply=lambda v: self.record("traits", v),
            take_deltas=self.deltas.take,
            send=lambda m: self.record("custom", m),
            **kwargs,
        )

    def poke(self) -> None:
        self.pub.poke()

    def change(self, **values: Any) -> None:
        with self.lock:
            self.values.update(values)
            self.changed.update(values)
        self.pub.poke()

    def take(self) -> set[str]:
        with self.lock:
            changed, self.changed = self.changed, set()
            return changed

    def render(self, names: Collection[str]) -> dict[str, Any]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        self.rendered.append(set(names))
        with self.lock:
            return {name: self.values[name] for name in names}

    def record(self, what: str, message: dict[str, Any]) -> None:
        self.threads.add(threading.current_thread().name)
        self.sent.append((what, dict(message)))

    def batches(self) -> list[dict[str, Any]]:
        return [m for what, m in self.sent if what == "traits"]

    def seqs(self) -> list[int]:
        return [m["seq"] for _, m in self.sent]


def test_only_changed_traits_are_rendered_and_each_batch_is_numbered() -> None:
    src = Source(trait_interval=0.0, delta_interval=0.0)
    try:
        assert src.pub.flush()
        src.change(a=1, b="x")
        assert src.pub.flush()
        src.change(b="y")
        assert src.pub.flush()
        assert src.rendered == [{"n"}, {"a", "b"}, {"b"}]
        assert src.batches() == [
            {"n": 0, "seq": 1},
            {"a": 1, "b": "x", "seq": 2},
            {"b": "y", "seq": 3},
        ]
        assert src.pub.seq == 3
    finally:
        src.pub.close()


def test_many_pokes_are_coalesced_into_few_writes() -> None:
    src = Source(trait_interval=0.2)
    try:
        assert src.pub.flush()
        for i in range(1, 501):
            src.change(n=i)
        assert src.pub.flush()
        assert src.batches()[-1]["n"] == 500
        # 500 pokes within a few intervals: a handful of writes, not 500.
        assert len(src.batches()) < 20
    finally:
        src.pub.close()


def test_streamed_text_goes_out_as_numbered_deltas_after_the_traits_of_the_same_round() -> None:
    src = Source(trait_interval=0.0, delta_interval=0.0)
    try:
        assert src.pub.flush()
        src.deltas.open("c1", "m1")
        src.change(transcript="m1 is streaming")
        for piece in ["Hel", "lo", " there"]:
            src.deltas.append("m1", piece)
        assert src.pub.flush()
        src.deltas.append("m1", "!")
        assert src.pub.flush()
        customs = [m for what, m in src.sent if what == "custom"]
        assert "".join(m["text"] for m in customs) == "Hello there!"
        assert [m["index"] for m in customs] == list(range(len(customs)))
        assert all(m["kind"] == "delta" and m["message_id"] == "m1" for m in customs)
        seqs = src.seqs()
        assert seqs == list(range(1, len(seqs) + 1))  # one counter for traits and deltas
        first_delta = next(i for i, (what, _) in enumerate(src.sent) if what == "custom")
        assert "transcript" in src.sent[first_delta - 1][1]
    finally:
        src.pub.close()


def test_text_pieces_wake_the_publisher_once_per_chunk() -> None:
    pokes = [0]
    deltas = DeltaStream(lambda: pokes.__setitem__(0, pokes[0] + 1))
    deltas.open("c1", "m1")
    for _ in range(100):
        deltas.append("m1", "x")
    assert pokes[0] == 1
    (chunk,) = deltas.take()
    assert (chunk.index, chunk.text) == (0, "x" * 100)
    deltas.append("m1", "y")
    assert pokes[0] == 2
    assert deltas.snapshot("m1") == ("x" * 100, 1)  # only what was taken
    assert deltas.text("m1") == "x" * 100 + "y"
    assert deltas.close("m1") == "x" * 100 + "y"
    assert deltas.take() == []


def test_all_writes_happen_on_the_publisher_thread() -> None:
    src = Source(trait_interval=0.0, delta_interval=0.0, name="only-writer")
    try:
        workers = [
            threading.Thread(target=lambda k=k: [src.change(**{f"w{k}": i}) for i in range(50)])
            for k in range(4)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert src.pub.flush()
        assert src.threads == {"only-writer"}
    finally:
        src.pub.close()


def test_render_failure_is_reported_and_publisher_keeps_running() -> None:
    errors: list[BaseException] = []
    src = Source(trait_interval=0.0, delta_interval=0.0, on_error=errors.append)
    try:
        assert src.pub.flush()
        src.fail_next = True
        src.change(n=2)
        assert src.pub.flush()
        assert [str(e) for e in errors] == ["boom"]
        src.change(n=3)
        assert src.pub.flush()
        assert src.batches()[-1]["n"] == 3
    finally:
        src.pub.close()


def test_close_stops_the_thread() -> None:
    src = Source()
    src.pub.close(timeout=2.0)
    assert not src.pub.alive
    assert not src.pub.flush(timeout=0.5)


def test_a_checkpointer_is_poked_after_every_piece_and_reads_the_text_so_far() -> None:
    deltas = DeltaStream()
    seen: list[str | None] = []
    deltas.open("c1", "m1", on_append=lambda: seen.append(deltas.text("m1")))
    for piece in ["a", "b", "c"]:
        deltas.append("m1", piece)
    deltas.take()
    assert seen == ["a", "ab", "abc"]


def test_a_flush_goes_at_once_even_right_after_a_round() -> None:
    # the reply thread flushes before encoding its prompt: waiting out the delta interval
    # there delayed the first token by up to that interval (50 ms in the widget)
    src = Source(trait_interval=5.0, delta_interval=5.0)
    try:
        assert src.pub.flush()  # the first round
        src.change(n=1)  # traits not due for 5 s, the next round not due for 5 s
        started = time.monotonic()
        assert src.pub.flush()
        assert time.monotonic() - started < 2.5
        assert src.batches()[-1]["n"] == 1  # and it sent them
        started = time.monotonic()
        assert src.pub.flush()  # nothing new: still at once
        assert time.monotonic() - started < 2.5
    finally:
        src.pub.close()


def test_an_urgent_change_cuts_short_the_wait_for_the_next_round() -> None:
    # A non-urgent poke (download progress, say) puts the publisher in its delta-interval
    # wait; a turn's start coming meanwhile must not wait it out (it cost replies 50 ms).
    urgent = threading.Event()
    asked = threading.Event()  # the publisher asked whether to go now (and was told no)
    sent = threading.Event()

    def is_urgent() -> bool:
        asked.set()
        return urgent.is_set()

    src = Source(trait_interval=0.0, delta_interval=5.0, urgent=is_urgent)
    try:
        assert src.pub.flush()  # a round just happened: the next is not due for 5 s
        asked.clear()
        src.change(n=1)  # not urgent: it waits
        assert asked.wait(4.0)
        original = src.record

        def record(what: str, message: dict[str, Any]) -> None:
            original(what, message)
            if message.get("n") == 2:
                sent.set()

        src.record = record  # type: ignore[method-assign]
        started = time.monotonic()
        urgent.set()
        src.change(n=2)
        assert sent.wait(4.0), "the urgent change waited for the interval"
        assert time.monotonic() - started < 2.5
    finally:
        src.pub.close()


def test_send_deltas_now_sends_on_the_calling_thread_unless_traits_wait_to_go_first() -> None:
    waiting = threading.Event()
    src = Source(trait_interval=5.0, delta_interval=5.0, changes_waiting=waiting.is_set)
    try:
        assert src.pub.flush()
        src.deltas.open("c1", "m1")
        src.deltas.append("m1", "Hel")
        waiting.set()  # a turn's start not published yet: the text must not overtake it
        assert src.pub.send_deltas_now() is False
        assert [w for w, _ in src.sent] == ["traits"]
        waiting.clear()
        result: list[bool] = []
        caller = threading.Thread(
            target=lambda: result.append(src.pub.send_deltas_now()), name="reply-thread"
        )
        caller.start()
        caller.join(10)
        assert result == [True]
        what, message = src.sent[-1]
        assert (what, message["text"], message["index"]) == ("custom", "Hel", 0)
        assert "reply-thread" in src.threads
        assert src.seqs() == [1, 2]  # the same numbering as the publisher's own rounds
        # at most one such send per delta interval: text arriving token by token goes out
        # in chunks (the publisher, poked instead, sends it when the interval is up)
        src.deltas.append("m1", "lo")
        assert src.pub.send_deltas_now() is False
        assert src.seqs() == [1, 2]
        src.pub.close()
        assert src.pub.send_deltas_now() is False  # stopped: nothing sent any more
    finally:
        src.pub.close()
