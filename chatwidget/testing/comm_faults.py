"""Make a widget's comm behave like a host that loses updates sent from background threads.

Google Colab does not render widget messages sent from a background thread until some other
message goes out (colabtools #3373); chatwidget publishes progress and streamed text from
such threads. :func:`drop_background_messages` makes the same happen anywhere: every comm
message a widget sends from a thread other than the main one is dropped (and counted), so a
test can check that the front end still gets everything, through the snapshots the kernel
sends from its main thread.

In a notebook cell, after the widget is displayed::

    from chatwidget.testing.comm_faults import drop_background_messages
    harness = drop_background_messages(chat)
    ...
    harness.restore()
"""

from __future__ import annotations

import threading
from typing import Any


class DroppedMessages:
    """Counts what was dropped; :meth:`restore` puts the comm back."""

    def __init__(self, widget: Any) -> None:
        self._comm = widget.comm
        self._original = self._comm.publish_msg
        self.dropped = 0
        self.passed = 0
        self._lock = threading.Lock()
        self._comm.publish_msg = self._publish

    def _publish(self, msg_type: str, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            with self._lock:
                self.dropped += 1
            return None
        with self._lock:
            self.passed += 1
        return self._original(msg_type, *args, **kwargs)

    def restore(self) -> None:
        self._comm.publish_msg = self._original


def drop_background_messages(widget: Any) -> DroppedMessages:
    """Drop every comm message ``widget`` sends from a background thread, from now on."""
    if getattr(widget, "comm", None) is None:
        raise ValueError("The widget has no comm (it was closed): display a live widget first.")
    return DroppedMessages(widget)
