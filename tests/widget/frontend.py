"""A stand-in for the browser at the comm boundary, for kernel-side widget tests.

Incoming intents go through ipywidgets' own message dispatch (``_handle_msg``); what the
kernel would send to the browser is recorded from the comm (``publish_msg``), with its size
as JSON. :class:`FrontEnd` also follows the sync protocol the way ``js/src/sync.ts`` does,
so a test can read what a view would show: the transcript, with streamed text applied.
The browser tests (tests/browser) cover the real front end.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from chatwidget.widget import ChatWidget


class FrontEnd:
    """Records what the kernel sends over the widget's comm and sends intents into it."""

    def __init__(self, chat: ChatWidget) -> None:
        self.chat = chat
        self.sent: list[tuple[float, dict[str, Any], int]] = []  # (time, data, bytes)
        self._lock = threading.Lock()
        self._n = 0
        chat.comm.publish_msg = self._record

    def _record(self, msg_type: str, data: Any = None, **_: Any) -> None:
        if isinstance(data, dict):
            size = len(json.dumps(data, separators=(",", ":")))
            with self._lock:
                self.sent.append((time.monotonic(), data, size))

    # ------------------------------------------------------------------ sending

    def intent(self, content: Any) -> dict[str, Any]:
        """Send one message as the browser would; return the kernel's reply to it."""
        with self._lock:
            before = len(self.sent)
        msg = {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
        self.chat._handle_msg(msg)
        with self._lock:
            replies = [
                d["content"]
                for _, d, _ in self.sent[before:]
                if d.get("method") == "custom" and "ok" in d["content"]
            ]
        assert len(replies) == 1, replies
        return replies[0]

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._n += 1
        return self.intent({"id": f"r{self._n}", "kind": kind, **fields})

    # ------------------------------------------------------------------ reading

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d for _, d, _ in self.sent]

    def state_updates(self, trait: str) -> list[float]:
        with self._lock:
            return [
                t
                for t, d, _ in self.sent
                if d.get("method") == "update" and trait in d.get("state", {})
            ]

    def deltas(self, since: int = 0) -> list[dict[str, Any]]:
        """Delta messages sent (after position ``since`` of the record)."""
        return [
            d["content"]
            for _, d, _ in self.since(since)
            if d.get("method") == "custom" and d["content"].get("kind") == "delta"
        ]

    def mark(self) -> int:
        """A position in the record, for :meth:`since`."""
        with self._lock:
            return len(self.sent)

    def since(self, mark: int) -> list[tuple[float, dict[str, Any], int]]:
        with self._lock:
            return list(self.sent[mark:])


def stream_text(snapshot_row: dict[str, Any], deltas: list[dict[str, Any]]) -> str:
    """A streaming row's text after the deltas a view got later: chunks from ``chunks`` on."""
    text, nxt = snapshot_row["content"], snapshot_row["chunks"]
    for d in sorted(deltas, key=lambda d: d["index"]):
        if d["message_id"] == snapshot_row["id"] and d["index"] == nxt:
            text += d["text"]
            nxt += 1
    return text


def wait_for(
    chat: ChatWidget, predicate: Callable[[], bool], timeout: float = 60.0, what: str = ""
) -> None:
    """Wait until ``predicate()`` holds, re-checking on every orchestrator event."""
    changed = threading.Event()
    unsubscribe = chat.subscribe(lambda _event: changed.set())
    try:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            changed.wait(min(left, 0.05))
            changed.clear()
    finally:
        unsubscribe()
