"""One error tree for chatwidget.

Every error also inherits a builtin, so callers can catch either the specific
class or the builtin (``except LookupError`` catches :class:`RepoNotFoundError`).
Each message says what to do next.
"""

from __future__ import annotations


class ChatWidgetError(Exception):
    """Base class of every error raised by chatwidget.

    Class attributes describe the failure for :func:`chatwidget.failure.failure_of`:
    ``kind`` (a stable name), ``retryable`` (whether trying again may help) and
    ``action`` (what the user can do; None means "Retry" when retryable, else nothing).
    """

    kind: str = "error"
    retryable: bool = True
    action: str | None = None


# --- validation -----------------------------------------------------------------


class InvalidRepoIdError(ChatWidgetError, ValueError):
    """A repo id is malformed (expected ``org/name``)."""

    kind = "invalid_repo_id"
    retryable = False


class InvalidModelSpecError(ChatWidgetError, ValueError):
    """A :class:`~chatwidget.catalog.ModelSpec` names an unknown dtype or quantization."""

    kind = "invalid_model_spec"
    retryable = False


class ProtocolError(ChatWidgetError, ValueError):
    """A message from the front end is malformed; it is answered with an error and ignored."""

    kind = "protocol"
    retryable = False


# --- downloads ------------------------------------------------------------------


class DownloadError(ChatWidgetError):
    """Base class of download failures. ``retryable`` says whether a retry may help."""

    kind = "download"


class RepoNotFoundError(DownloadError, LookupError):
    """The repo does not exist on the hub, or is private and no token can see it."""

    kind = "not_found"
    retryable = False
    action = "Check the model id"


class GatedRepoError(DownloadError, PermissionError):
    """The repo is gated: accept its terms on the hub and pass a token that has access."""

    kind = "gated"
    retryable = False
    action = "Add a token"


class RevisionNotFoundError(DownloadError, LookupError):
    """The requested revision (branch, tag or commit) does not exist in the repo."""

    kind = "revision_not_found"
    retryable = False
    action = "Check the revision"


class NetworkError(DownloadError, ConnectionError):
    """The hub could not be reached, or the connection broke and could not be resumed."""

    kind = "network"
    retryable = True


class StalledDownloadError(DownloadError, TimeoutError):
    """No bytes arrived for longer than the stall timeout."""

    kind = "stalled"
    retryable = True


class ServerError(DownloadError, ConnectionError):
    """The hub answered with a server error (5xx)."""

    kind = "server"
    retryable = True


class DiskFullError(DownloadError, OSError):
    """Not enough free disk for the download, before starting or mid-way."""

    kind = "disk_full"
    retryable = False
    action = "Free disk space"


class CorruptedFileError(DownloadError, ValueError):
    """A downloaded file does not match the size or sha256 the hub listed; it was removed."""

    kind = "corrupted"
    retryable = True


class DownloadCanceledError(DownloadError):
    """The download was canceled by the user. Finished files stay in the cache."""

    kind = "canceled"
    retryable = True


class DownloadInProgressError(DownloadError, RuntimeError):
    """The repo is downloading right now: wait for it, or cancel it before deleting or retrying."""

    kind = "in_progress"
    retryable = False


# --- engine ---------------------------------------------------------------------


class EngineError(ChatWidgetError):
    """Base class of engine failures."""

    kind = "engine"
    retryable = True


class ModelNotDownloadedError(EngineError, FileNotFoundError):
    """The model is not (fully) in the local cache: download it first."""

    kind = "not_downloaded"
    retryable = True


class ModelTooLargeError(EngineError, MemoryError):
    """The model will not fit in the memory available; pick a smaller model or free memory."""

    kind = "too_large"
    retryable = False
    action = "Free memory"


class PrecisionUnavailableError(EngineError, ValueError):
    """A spec asks for a precision this machine cannot load (8/4-bit without CUDA or
    bitsandbytes); the message says what is missing."""

    kind = "precision_unavailable"
    retryable = False
    action = "Pick another precision"


class ModelLoadError(EngineError, RuntimeError):
    """transformers failed to load the model from the cache."""

    kind = "load"
    retryable = True


class ModelNotLoadedError(EngineError, LookupError):
    """The model is not loaded; load it before generating."""

    kind = "not_loaded"
    retryable = True


class NoChatTemplateError(EngineError, ValueError):
    """The tokenizer has no chat template, so a message history cannot be formatted."""

    kind = "no_chat_template"
    retryable = False
    action = "Pick an instruct model"


class GenerationError(EngineError, RuntimeError):
    """Generation raised; the partial reply is kept and the chat stays usable."""

    kind = "generation"
    retryable = True

    partial_text: str = ""  # the text streamed before the failure


class InvalidGenerationRequestError(EngineError, ValueError):
    """The messages or generation settings are malformed; fix them and send again."""

    kind = "invalid_request"
    retryable = False


class LoadCanceledError(EngineError):
    """A load was canceled; the model was discarded and its memory freed."""

    kind = "canceled"
    retryable = True


# --- orchestration --------------------------------------------------------------


class IllegalTransitionError(ChatWidgetError, RuntimeError):
    """A lifecycle transition that the state table does not allow: a bug in chatwidget."""

    kind = "internal"
    retryable = True


class UnknownConversationError(ChatWidgetError, KeyError):
    """No conversation has this id."""

    kind = "unknown_conversation"
    retryable = False


class NoActiveModelError(ChatWidgetError, RuntimeError):
    """The conversation has no active model yet; pick a model and wait until it is Ready."""

    kind = "no_active_model"
    retryable = False
    action = "Pick a model"


class ConversationExistsError(ChatWidgetError, ValueError):
    """A conversation with this id is already open; pick a new id or close the old one."""

    kind = "conversation_exists"
    retryable = False


class UnknownModelError(ChatWidgetError, KeyError):
    """No model with this repo id was registered or requested."""

    kind = "unknown_model"
    retryable = False


class OrchestratorClosedError(ChatWidgetError, RuntimeError):
    """The orchestrator was closed; create a new one (a new widget) to go on."""

    kind = "closed"
    retryable = False


# --- remote servers (OpenAI-compatible) -------------------------------------------


class RemoteError(ChatWidgetError):
    """Base class of failures talking to an OpenAI-compatible server.

    Raised from a reply, ``partial_text`` holds what the server streamed before the failure
    (the chat keeps it, marked as cut off). Messages never contain an API key.
    """

    kind = "remote"
    retryable = True

    partial_text: str = ""


class InvalidServerError(RemoteError, ValueError):
    """A server's URL, name or key settings are malformed (e.g. not an http/https URL)."""

    kind = "invalid_server"
    retryable = False
    action = "Check the server settings"


class ServerExistsError(RemoteError, ValueError):
    """Another server already has this name: pick another name, or remove that server first."""

    kind = "server_exists"
    retryable = False
    action = "Pick another name"


class UnknownServerError(RemoteError, LookupError):
    """No server with this name was added; add it before using its models."""

    kind = "unknown_server"
    retryable = False
    action = "Add the server"


class MissingApiKeyError(RemoteError, LookupError):
    """The environment variable named for a server's API key is not set."""

    kind = "missing_api_key"
    retryable = False
    action = "Set the API key"


class ServerUnreachableError(RemoteError, ConnectionError):
    """The server could not be reached (refused, unknown host, TLS failure)."""

    kind = "unreachable"
    retryable = True


class ServerTimeoutError(RemoteError, TimeoutError):
    """The server did not answer, or stopped sending, within the timeout."""

    kind = "timeout"
    retryable = True


class RemoteAuthError(RemoteError, PermissionError):
    """The server refused the API key (401) or the key may not use this model (403)."""

    kind = "auth"
    retryable = False
    action = "Check the API key"


class RemoteModelNotFoundError(RemoteError, LookupError):
    """The server does not serve this model (404, or it is not in ``/v1/models``)."""

    kind = "remote_model_not_found"
    retryable = False
    action = "Pick another model"


class RateLimitedError(RemoteError, ConnectionError):
    """The server kept answering 429 (too many requests) after the retries allowed."""

    kind = "rate_limited"
    retryable = True


class RemoteServerError(RemoteError, ConnectionError):
    """The server answered with a server error (5xx)."""

    kind = "server"
    retryable = True


class RemoteRequestError(RemoteError, ValueError):
    """The server rejected the request as invalid (400/422), e.g. a conversation too long."""

    kind = "bad_request"
    retryable = False
    action = "Shorten the conversation"


class BadResponseError(RemoteError, ValueError):
    """The server's answer is not valid SSE or JSON: the URL may not be an OpenAI-compatible API."""

    kind = "bad_response"
    retryable = False
    action = "Check the URL"


class StreamDroppedError(RemoteError, ConnectionError):
    """The connection broke mid-reply; the partial reply is kept and a retry may finish it."""

    kind = "stream_dropped"
    retryable = True
