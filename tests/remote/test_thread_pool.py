"""ThreadPool: the remote engine's stop watchers reuse their threads between replies."""

from __future__ import annotations

import threading
import time

from chatwidget.engine.remote.thread_pool import ThreadPool


def run_and_wait(pool: ThreadPool, job: threading.Event | None = None) -> threading.Thread:
    """Run a job that records its thread; wait until it has finished."""
    seen: list[threading.Thread] = []
    done = threading.Event()

    def record() -> None:
        seen.append(threading.current_thread())
        if job is not None:
            job.wait(10)
        done.set()

    pool.run(record)
    assert done.wait(10)
    return seen[0]


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.005)


def test_a_thread_is_reused_for_the_next_job_and_jobs_at_once_get_their_own() -> None:
    pool = ThreadPool("test-pool")
    try:
        first = run_and_wait(pool)
        wait_until(lambda: pool._idle)  # back in the pool once its job is done
        assert run_and_wait(pool) is first  # no new thread for the next job
        release = threading.Event()
        busy: list[threading.Thread] = []
        pool.run(lambda: (busy.append(threading.current_thread()), release.wait(10)))
        wait_until(lambda: busy)
        other = run_and_wait(pool)  # while the first is busy: another thread
        assert other is not busy[0]
        release.set()
    finally:
        pool.close()


def test_close_ends_idle_threads_and_busy_ones_after_their_job() -> None:
    pool = ThreadPool("test-pool")
    release = threading.Event()
    busy: list[threading.Thread] = []
    pool.run(lambda: (busy.append(threading.current_thread()), release.wait(10)))
    wait_until(lambda: busy)
    idle = run_and_wait(pool)  # a second thread, idle once its job is done
    assert idle is not busy[0]
    wait_until(lambda: pool._idle)
    pool.close()
    idle.join(10)
    assert not idle.is_alive()
    assert busy[0].is_alive()  # its job is not cut short
    release.set()
    busy[0].join(10)
    assert not busy[0].is_alive()


def test_a_thread_idle_for_long_enough_ends() -> None:
    pool = ThreadPool("test-pool", idle_s=0.05)
    thread = run_and_wait(pool)
    thread.join(10)
    assert not thread.is_alive()
    assert pool._idle == []
    assert run_and_wait(pool) is not thread  # a new one when work comes again
    pool.close()
