"""Make a widget's comm behave like a host that loses updates sent from background threads.

Google Colab does not render widget messages sent from a background thread until some other
message goes out (colabtools #3373); chatwidget publishes progress and streamed text from
such threads. :func:`drop_background_messages` makes the same happen anywhere: every comm
message a widget sends from a background thread is dropped (and counted), so a test can
check that the front end still gets everything, through the snapshots the kernel sends in
answer to its requests.

A message counts as the kernel's own (and goes through) when it is sent on the main thread
(cells run there) or while the comm handles a message from the front end: ipykernel 7 may
handle comm messages on a subshell thread, which is still the kernel answering a request.

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
        self._original_publish = self._comm.publish_msg
        self._original_handle = self._comm.handle_msg
        self._handling = threading.local()
        self.dropped = 0
        self.passed = 0
        self._lock = threading.Lock()
        self._comm.publish_msg = self._publish
        self._comm.handle_msg = self._handle

    def _handle(self, msg: Any) -> Any:
        self._handling.active = True
        try:
            return self._original_handle(msg)
        finally:
            self._handling.active = False

    def _publish(self, msg_type: str, *args: Any, **kwargs: Any) -> Any:
        own = threading.current_thread() is threading.main_thread() or getattr(
            self._handling, "active", False
        )
        with self._lock:
            if own:
                self.passed += 1
            else:
                self.dropped += 1
        return self._original_publish(msg_type, *args, **kwargs) if own else None

    def restore(self) -> None:
        self._comm.publish_msg = self._original_publish
        self._comm.handle_msg = self._original_handle


def drop_background_messages(widget: Any) -> DroppedMessages:
    """Drop every comm message ``widget`` sends from a background thread, from now on."""
    if getattr(widget, "comm", None) is None:
        raise ValueError("The widget has no comm (it was closed): display a live widget first.")
    return DroppedMessages(widget)
