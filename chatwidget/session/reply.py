"""The handle ``ChatWidget.send`` returns: a reply being generated on the reply thread."""

from __future__ import annotations

import threading

from chatwidget.engine.types import GenerationResult


class ReplyHandle:
    """The reply to one message. ``wait(timeout)`` returns its text when it is done."""

    def __init__(self, conversation_id: str, message_id: str) -> None:
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.stop_event = threading.Event()
        self._done = threading.Event()
        self._first_token = threading.Event()
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def result(self) -> GenerationResult | None:
        """Text, stop flag and usage, once the reply has finished."""
        return self._result

    def stop(self) -> None:
        """Stop generating; the partial reply is kept and marked as stopped."""
        self.stop_event.set()

    def wait_for_first_token(self, timeout: float | None = None) -> bool:
        """Block until the first piece of text arrives (or the reply ends); True if it did."""
        self._first_token.wait(timeout)
        return self._first_token.is_set()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the reply finishes and return its text.

        Raises ``TimeoutError`` if it is not done in time, or the generation's own error.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"The reply was not finished within {timeout} s.")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result.text

    def _got_text(self) -> None:
        if not self._first_token.is_set():  # once per token: a flag read after the first
            self._first_token.set()

    def _finish(self, result: GenerationResult) -> None:
        self._result = result
        self._done.set()
        self._first_token.set()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()
        self._first_token.set()
