"""The session's one long-lived reply thread: order, idleness, failures and close."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from chatwidget.session.reply_worker import ReplyWorker
from chatwidget.testing.models import DEMO_TINY_REPO
from chatwidget.widget import ChatWidget

WAIT_S = 30.0


def test_jobs_run_in_order_on_one_thread_and_idle_means_all_finished() -> None:
    worker = ReplyWorker(name="test-reply")
    gate = threading.Event()
    ran: list[tuple[int, str]] = []

    def job(n: int) -> Callable[[], None]:
        def run() -> None:
            if n == 0:
                assert gate.wait(WAIT_S)
            ran.append((n, threading.current_thread().name))

        return run

    try:
        assert worker.wait_idle(0)
        for n in range(3):
            worker.submit(job(n))
        assert not worker.wait_idle(0.05)  # the first job holds the rest back
        gate.set()
        assert worker.wait_idle(WAIT_S)
        assert ran == [(0, "test-reply"), (1, "test-reply"), (2, "test-reply")]
    finally:
        worker.close()
    assert not worker.alive


def test_a_failing_job_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = ReplyWorker()
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("a bug in a job")

    try:
        worker.submit(boom)
        worker.submit(done.set)
        assert done.wait(WAIT_S)
        assert worker.wait_idle(WAIT_S)
    finally:
        worker.close()
    assert "A reply job failed" in caplog.text


def test_close_ends_the_thread_and_refuses_new_jobs() -> None:
    worker = ReplyWorker()
    worker.close()  # never started: nothing to join
    assert not worker.alive
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(lambda: None)
    started = ReplyWorker()
    started.submit(lambda: None)
    assert started.wait_idle(WAIT_S)
    assert started.alive
    started.close()
    assert not started.alive


def test_replies_of_a_widget_share_one_thread_that_stops_with_it(
    make_chat: Callable[..., ChatWidget],
) -> None:
    def replies() -> int:
        return sum(t.name == "chatwidget-reply" for t in threading.enumerate())

    before = replies()  # other widgets' threads, if any test left one
    chat = make_chat(models=[DEMO_TINY_REPO])
    chat.select_model(DEMO_TINY_REPO)
    assert chat.wait_until_idle(120)
    chat.set_settings(max_new_tokens=4)
    counts: list[int] = []
    for text in ("one", "two", "three"):
        chat.send(text).wait(WAIT_S)
        assert chat.wait_until_idle(WAIT_S)
        counts.append(replies() - before)
    assert counts == [1, 1, 1]  # one thread, reused: no thread per turn
    assert [m["status"] for m in chat.messages if m["role"] == "assistant"] == ["done"] * 3
    chat.close()
    assert replies() == before
