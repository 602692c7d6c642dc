"""The model lifecycle: its states and the one table of allowed transitions."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from chatwidget.errors import IllegalTransitionError
from chatwidget.failure import Failure


class ModelState(enum.Enum):
    """Where a model stands; ``.label`` is the text the UI shows."""

    NOT_DOWNLOADED = "Not downloaded"
    DOWNLOADED = "Downloaded"
    QUEUED = "Queued"
    DOWNLOADING = "Downloading"
    COMPILING = "Compiling"
    CONNECTING = "Connecting"  # a remote model: one cheap request proves server and model
    READY = "Ready"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def label(self) -> str:
        """The UI text, e.g. ``"Not downloaded"``."""
        return str(self.value)


_S = ModelState

#: Every allowed transition. Anything else is a bug and raises IllegalTransitionError.
TRANSITIONS: Mapping[ModelState, frozenset[ModelState]] = MappingProxyType(
    {
        # At rest: a request or a retry puts it in the queue.
        _S.NOT_DOWNLOADED: frozenset({_S.QUEUED}),
        _S.DOWNLOADED: frozenset({_S.QUEUED}),
        # A cached model skips DOWNLOADING; a stale cached one that does not fit stops at
        # DOWNLOADED; a failure before the first byte (e.g. the cache check) is FAILED.
        # A remote model needs no download: it goes straight to CONNECTING.
        _S.QUEUED: frozenset(
            {_S.DOWNLOADING, _S.COMPILING, _S.CONNECTING, _S.DOWNLOADED, _S.FAILED, _S.CANCELED}
        ),
        _S.DOWNLOADING: frozenset({_S.COMPILING, _S.DOWNLOADED, _S.FAILED, _S.CANCELED}),
        # A load nobody wants any more that stops before loading (e.g. it waited for a reply
        # and the user switched back meanwhile) is DOWNLOADED again.
        _S.COMPILING: frozenset({_S.READY, _S.DOWNLOADED, _S.FAILED, _S.CANCELED}),
        _S.CONNECTING: frozenset({_S.READY, _S.FAILED, _S.CANCELED}),
        # Unloaded (evicted for room, idle for keep_alive, or by the user): still cached.
        _S.READY: frozenset({_S.DOWNLOADED}),
        _S.FAILED: frozenset({_S.QUEUED}),
        _S.CANCELED: frozenset({_S.QUEUED}),
    }
)

#: States of a model that is on its way: requesting it again only changes intent.
IN_FLIGHT: frozenset[ModelState] = frozenset(
    {_S.QUEUED, _S.DOWNLOADING, _S.COMPILING, _S.CONNECTING}
)
#: States the single worker is busy with; at most one model is in one of these.
WORKING: frozenset[ModelState] = frozenset({_S.DOWNLOADING, _S.COMPILING, _S.CONNECTING})
#: States from which a retry re-enqueues.
RETRYABLE: frozenset[ModelState] = frozenset({_S.FAILED, _S.CANCELED})


def check_transition(repo_id: str, old: ModelState, new: ModelState) -> None:
    """Raise :class:`IllegalTransitionError` unless the table allows ``old`` -> ``new``."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransitionError(
            f"{repo_id}: illegal lifecycle transition {old.label!r} -> {new.label!r}. "
            "This is a bug in chatwidget; please report it with the log."
        )


def can_cancel(state: ModelState) -> bool:
    """Whether the user may cancel a model in ``state`` (rows carry this to the UI)."""
    return state in IN_FLIGHT


def can_retry(state: ModelState, failure: Failure | None) -> bool:
    """Whether Retry can help: Canceled, or Failed with a retryable failure."""
    if state is _S.CANCELED:
        return True
    return state is _S.FAILED and (failure is None or failure.retryable)
