"""Progress: totals before the first byte, monotonic, throttled, always a final update."""

from __future__ import annotations

import threading
from pathlib import Path

from dl_helpers import ProgressRecorder
from hypothesis import given
from hypothesis import strategies as st

from chatwidget.downloads import Downloader, DownloadProgress
from chatwidget.downloads.progress import ProgressTracker
from chatwidget.testing.hub import LocalHub


def test_progress_is_monotonic_and_reaches_the_total(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    local_hub.rate = 20_000_000  # ~1.4 s for the 28 MB model: many updates
    downloader = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False)
    plan = downloader.plan(small_repo)
    recorder = ProgressRecorder()

    snapshot = downloader.download(small_repo, on_progress=recorder, cancel=threading.Event())

    updates = recorder.updates
    assert snapshot.is_dir()
    assert len(updates) >= 5
    first, last = updates[0], updates[-1]
    assert first.bytes_done == 0
    assert first.bytes_total == plan.total_bytes  # known before the first byte
    assert all(u.bytes_total == plan.total_bytes for u in updates)
    done = [u.bytes_done for u in updates]
    assert done == sorted(done)
    assert last.final
    assert last.bytes_done == plan.total_bytes
    assert last.files_done == last.files_total == len(plan.files)
    assert [u.final for u in updates].count(True) == 1
    assert any(u.speed_bps > 0 and u.eta_s is not None and u.eta_s > 0 for u in updates[:-1])
    assert any(u.file.endswith(".safetensors") and u.file_bytes_total > 0 for u in updates)


def test_progress_updates_come_at_most_ten_a_second(
    local_hub: LocalHub, small_repo: str, hf_cache: Path
) -> None:
    local_hub.rate = 14_000_000  # ~2 s
    downloader = Downloader(endpoint=local_hub.url, cache_dir=hf_cache, token=False)
    recorder = ProgressRecorder()

    downloader.download(small_repo, on_progress=recorder, cancel=threading.Event())

    times = [t for t, u in zip(recorder.times, recorder.updates, strict=True) if not u.final]
    span = times[-1] - times[0]
    assert len(times) >= 5
    # The throttle is 0.1 s: over the whole run, no more than ~10 per second (+1 for the edge).
    assert len(times) <= span * 10 + 2


class FakeClock:
    """A clock the test advances by hand (the tracker's only time source)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_throttles_updates_but_always_sends_the_final_one() -> None:
    clock = FakeClock()
    sent: list[DownloadProgress] = []
    tracker = ProgressTracker(
        "org/model", {"a.safetensors": 1000}, sent.append, interval_s=0.1, clock=clock
    )
    tracker.update({})
    for i in range(1, 10):
        clock.now += 0.01
        tracker.update({"a.safetensors": i * 10})
    assert len(sent) == 1  # 0.09 s passed: still throttled
    clock.now += 0.02
    tracker.update({"a.safetensors": 500})
    assert len(sent) == 2
    clock.now += 0.001
    tracker.mark_done("a.safetensors")
    final = tracker.finish()
    assert sent[-1] is final
    assert final.final
    assert final.bytes_done == 1000
    assert final.eta_s == 0.0


def test_tracker_never_reports_fewer_bytes_when_a_file_restarts() -> None:
    clock = FakeClock()
    sent: list[DownloadProgress] = []
    tracker = ProgressTracker("org/model", {"w.safetensors": 100}, sent.append, clock=clock)
    clock.now += 1
    tracker.update({"w.safetensors": 60})
    clock.now += 1
    tracker.update({"w.safetensors": 10})  # the client restarted the file from zero
    assert [u.bytes_done for u in sent] == [60, 60]


def test_a_wait_note_lasts_until_the_waited_file_moves_not_while_others_progress() -> None:
    clock = FakeClock()
    sent: list[DownloadProgress] = []
    sizes = {"a.safetensors": 100, "b.safetensors": 100, "c.safetensors": 100}
    tracker = ProgressTracker("org/model", sizes, sent.append, clock=clock)
    tracker.set_note("Waiting for another download of org/model", files=["a.safetensors"])
    assert sent[-1].note == "Waiting for another download of org/model"
    for n in (30, 60, 100):  # another file downloads meanwhile: still waiting for a
        clock.now += 1
        tracker.update({"b.safetensors": n})
        assert sent[-1].note == "Waiting for another download of org/model"
    clock.now += 1
    tracker.update({"a.safetensors": 10})  # the other process let go: a's bytes arrive
    assert sent[-1].note == ""
    # a wait that ends with the file already complete (the other process finished it)
    tracker.set_note("Waiting for another download of org/model", files=["c.safetensors"])
    tracker.mark_done("c.safetensors")
    clock.now += 1
    tracker.update({})
    assert sent[-1].note == ""


def test_tracker_smooths_speed_and_estimates_time_left() -> None:
    clock = FakeClock()
    sent: list[DownloadProgress] = []
    tracker = ProgressTracker("org/model", {"w.safetensors": 10_000}, sent.append, clock=clock)
    for i in range(1, 6):
        clock.now += 1
        tracker.update({"w.safetensors": i * 1000})  # steady 1000 B/s
    last = sent[-1]
    assert abs(last.speed_bps - 1000) < 1
    assert last.eta_s is not None
    assert abs(last.eta_s - 5.0) < 0.01


def test_tracker_counts_cached_files_as_done_from_the_start() -> None:
    sent: list[DownloadProgress] = []
    tracker = ProgressTracker(
        "org/model",
        {"config.json": 10, "w.safetensors": 90},
        sent.append,
        already_done={"config.json": 10},
    )
    tracker.update({})
    assert sent[0].bytes_done == 10
    assert sent[0].files_done == 1
    assert sent[0].files_total == 2


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["a.safetensors", "b.safetensors", "c.json"]),
            st.integers(min_value=0, max_value=2_000),
            st.floats(min_value=0.0, max_value=0.3),
        ),
        max_size=60,
    )
)
def test_tracker_reports_are_monotonic_bounded_and_end_final(
    steps: list[tuple[str, int, float]],
) -> None:
    clock = FakeClock()
    sent: list[DownloadProgress] = []
    sizes = {"a.safetensors": 1000, "b.safetensors": 1500, "c.json": 10}
    tracker = ProgressTracker("org/model", sizes, sent.append, interval_s=0.1, clock=clock)
    for path, count, dt in steps:
        clock.now += dt
        tracker.update({path: count}, current=path)
    tracker.finish()

    done = [u.bytes_done for u in sent]
    assert done == sorted(done)
    assert all(0 <= u.bytes_done <= u.bytes_total == 2510 for u in sent)
    assert all(u.eta_s is None or u.eta_s >= 0 for u in sent)
    assert [u.final for u in sent] == [False] * (len(sent) - 1) + [True]
