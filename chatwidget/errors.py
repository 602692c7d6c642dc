"""One error tree for chatwidget.

Every error also inherits a builtin, so callers can catch either the specific
class or the builtin (``except LookupError`` catches :class:`RepoNotFoundError`).
Each message says what to do next.
"""

from __future__ import annotations


class ChatWidgetError(Exception):
    """Base class of every error raised by chatwidget."""


# --- validation -----------------------------------------------------------------


class InvalidRepoIdError(ChatWidgetError, ValueError):
    """A repo id is malformed (expected ``org/name``)."""


class ProtocolError(ChatWidgetError, ValueError):
    """A message from the front end is malformed; it is answered with an error and ignored."""


# --- downloads ------------------------------------------------------------------


class DownloadError(ChatWidgetError):
    """Base class of download failures. ``retryable`` says whether a retry may help."""

    retryable: bool = True


class RepoNotFoundError(DownloadError, LookupError):
    """The repo does not exist on the hub, or is private and no token can see it."""

    retryable = False


class GatedRepoError(DownloadError, PermissionError):
    """The repo is gated: accept its terms on the hub and pass a token that has access."""

    retryable = False


class RevisionNotFoundError(DownloadError, LookupError):
    """The requested revision (branch, tag or commit) does not exist in the repo."""

    retryable = False


class NetworkError(DownloadError, ConnectionError):
    """The hub could not be reached, or the connection broke and could not be resumed."""


class StalledDownloadError(DownloadError, TimeoutError):
    """No bytes arrived for longer than the stall timeout."""


class ServerError(DownloadError, ConnectionError):
    """The hub answered with a server error (5xx)."""


class DiskFullError(DownloadError, OSError):
    """Not enough free disk for the download, before starting or mid-way."""


class CorruptedFileError(DownloadError, ValueError):
    """A downloaded file does not match the size or sha256 the hub listed; it was removed."""


class DownloadCanceledError(DownloadError):
    """The download was canceled by the user. Finished files stay in the cache."""


class DownloadInProgressError(DownloadError, RuntimeError):
    """The repo is downloading right now: wait for it, or cancel it before deleting or retrying."""


# --- engine ---------------------------------------------------------------------


class EngineError(ChatWidgetError):
    """Base class of engine failures."""


class ModelNotDownloadedError(EngineError, FileNotFoundError):
    """The model is not (fully) in the local cache: download it first."""


class ModelTooLargeError(EngineError, MemoryError):
    """The model will not fit in the memory available; pick a smaller model or free memory."""


class ModelLoadError(EngineError, RuntimeError):
    """transformers failed to load the model from the cache."""


class ModelNotLoadedError(EngineError, LookupError):
    """The model is not loaded; load it before generating."""


class NoChatTemplateError(EngineError, ValueError):
    """The tokenizer has no chat template, so a message history cannot be formatted."""


class GenerationError(EngineError, RuntimeError):
    """Generation raised; the partial reply is kept and the chat stays usable."""

    partial_text: str = ""  # the text streamed before the failure


class InvalidGenerationRequestError(EngineError, ValueError):
    """The messages or generation settings are malformed; fix them and send again."""


class LoadCanceledError(EngineError):
    """A load was canceled; the model was discarded and its memory freed."""


# --- orchestration --------------------------------------------------------------


class IllegalTransitionError(ChatWidgetError, RuntimeError):
    """A lifecycle transition that the state table does not allow: a bug in chatwidget."""


class UnknownConversationError(ChatWidgetError, KeyError):
    """No conversation has this id."""


class NoActiveModelError(ChatWidgetError, RuntimeError):
    """The conversation has no active model yet; pick a model and wait until it is Ready."""


class ConversationExistsError(ChatWidgetError, ValueError):
    """A conversation with this id is already open; pick a new id or close the old one."""


class UnknownModelError(ChatWidgetError, KeyError):
    """No model with this repo id was registered or requested."""


class OrchestratorClosedError(ChatWidgetError, RuntimeError):
    """The orchestrator was closed; create a new one (a new widget) to go on."""
