"""The one failure value that travels from a downloader or engine to events, statuses and rows.

Every :class:`~chatwidget.errors.ChatWidgetError` subclass names its ``kind``, whether a
retry can help (``retryable``) and what the user can do instead (``action``).
:func:`failure_of` turns any exception into a :class:`Failure`; the UI offers Retry only
where ``retryable`` is true and shows ``action`` as the way out otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatwidget.errors import ChatWidgetError

#: The action shown when a retry is what helps.
RETRY = "Retry"


@dataclass(frozen=True)
class Failure:
    """Why something failed, in words a user can act on.

    ``kind`` is a stable machine-readable name ("not_found", "gated", "network", ...);
    ``message`` says what happened and what to do; ``retryable`` says whether trying the
    same thing again may succeed; ``action`` names the one thing to do ("Retry",
    "Add a token", "Free memory", ...), or is None when there is nothing to offer.
    """

    kind: str
    message: str
    retryable: bool
    action: str | None = None

    def as_dict(self) -> dict[str, str | bool | None]:
        """The JSON form rows and events carry."""
        return {
            "kind": self.kind,
            "message": self.message,
            "retryable": self.retryable,
            "action": self.action,
        }


def failure_of(exc: BaseException) -> Failure:
    """The :class:`Failure` an exception stands for.

    chatwidget's own errors carry their kind, retryability and action as class
    attributes; anything else is an internal error that a retry may get past.
    """
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ChatWidgetError):
        retryable = bool(exc.retryable)
        action = exc.action if exc.action is not None else (RETRY if retryable else None)
        return Failure(kind=exc.kind, message=message, retryable=retryable, action=action)
    return Failure(kind="internal", message=message, retryable=True, action=RETRY)
