"""Errors of the history package; part of chatwidget's one error tree (each also a builtin)."""

from __future__ import annotations

from chatwidget.errors import ChatWidgetError


class HistoryError(ChatWidgetError):
    """Base class of history errors."""

    kind = "history"
    retryable = False


class UnknownMessageError(HistoryError, KeyError):
    """No message with this id is loaded (it never existed, or its conversation was deleted)."""

    kind = "unknown_message"

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else "Unknown message."


class InvalidVersionError(HistoryError, IndexError):
    """``select_version`` got an index outside the message's versions."""

    kind = "invalid_version"


class ImportFormatError(HistoryError, ValueError):
    """An imported conversation is malformed. ``where`` names the field (``messages[3].role``).

    The message says what is wrong and what was expected; nothing was imported.
    """

    kind = "invalid_import"
    action = "Fix the file"

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        prefix = f"{where}: " if where else ""
        super().__init__(f"Cannot import this conversation: {prefix}{problem}")
