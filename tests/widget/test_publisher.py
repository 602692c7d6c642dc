"""TraitPublisher: one writer thread, coalesced updates, errors surfaced."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from chatwidget.widget.sync import TraitPublisher


class Recorder:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {"n": 0}
        self.batches: list[dict[str, Any]] = []
        self.threads: set[str] = set()

    def render(self) -> Mapping[str, Any]:
        return dict(self.state)

    def apply(self, changed: Mapping[str, Any]) -> None:
        self.threads.add(threading.current_thread().name)
        self.batches.append(dict(changed))


def test_flush_publishes_latest_state_only_changed_keys() -> None:
    rec = Recorder()
    pub = TraitPublisher(rec.render, rec.apply, min_interval=0.01)
    try:
        assert pub.flush()
        rec.state = {"n": 1, "m": "x"}
        assert pub.flush()
        rec.state = {"n": 1, "m": "y"}
        assert pub.flush()
        assert rec.batches == [{"n": 0}, {"n": 1, "m": "x"}, {"m": "y"}]
    finally:
        pub.close()


def test_many_pokes_are_coalesced_into_few_writes() -> None:
    rec = Recorder()
    pub = TraitPublisher(rec.render, rec.apply, min_interval=0.2)
    try:
        assert pub.flush()
        for i in range(1, 501):
            rec.state = {"n": i}
            pub.poke()
        assert pub.flush()
        assert rec.batches[-1] == {"n": 500}
        # 500 pokes within a few intervals: a handful of writes, not 500.
        assert len(rec.batches) < 20
    finally:
        pub.close()


def test_all_writes_happen_on_the_publisher_thread() -> None:
    rec = Recorder()
    pub = TraitPublisher(rec.render, rec.apply, min_interval=0.0, name="only-writer")
    try:
        workers = [
            threading.Thread(target=lambda: [pub.poke() for _ in range(50)]) for _ in range(4)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rec.state = {"n": 7}
        assert pub.flush()
        assert rec.threads == {"only-writer"}
    finally:
        pub.close()


def test_render_failure_is_reported_and_publisher_keeps_running() -> None:
    errors: list[BaseException] = []
    rec = Recorder()
    fail = threading.Event()

    def render() -> Mapping[str, Any]:
        if fail.is_set():
            fail.clear()
            raise RuntimeError("boom")
        return rec.render()

    pub = TraitPublisher(render, rec.apply, min_interval=0.0, on_error=errors.append)
    try:
        fail.set()
        assert pub.flush()
        assert [str(e) for e in errors] == ["boom"]
        rec.state = {"n": 3}
        assert pub.flush()
        assert rec.batches[-1] == {"n": 3}
    finally:
        pub.close()


def test_close_stops_the_thread() -> None:
    rec = Recorder()
    pub = TraitPublisher(rec.render, rec.apply)
    pub.close(timeout=2.0)
    assert not pub.alive
    assert not pub.flush(timeout=0.5)
