"""Turn what the ``openai`` client raises into chatwidget's remote errors, with what to do.

Every message names the server and says what to do next. None contains the API key: any text
that comes from the server is shortened and has the key cut out before it is used.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import openai

from chatwidget.engine.remote.servers import RemoteServer
from chatwidget.errors import (
    BadResponseError,
    MissingApiKeyError,
    RemoteAuthError,
    RemoteError,
    RemoteModelNotFoundError,
    RemoteRequestError,
    RemoteServerError,
    ServerTimeoutError,
    ServerUnreachableError,
    StreamDroppedError,
)

logger = logging.getLogger("chatwidget.engine.remote")

_DETAIL_CHARS = 300


def redact(text: str, server: RemoteServer) -> str:
    """``text`` with the server's API key (if any) replaced by ``***``."""
    try:
        key = server.api_key()
    except MissingApiKeyError:
        return text
    secret = key.reveal() if key is not None else ""
    return text.replace(secret, "***") if secret else text


def server_detail(exc: openai.APIStatusError, server: RemoteServer) -> str:
    """The server's own error message (OpenAI's ``error.message`` or FastAPI's ``detail``)."""
    body: Any = exc.body
    text: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        text = error.get("message") or error.get("detail") if isinstance(error, dict) else error
        text = text or body.get("detail") or body.get("message")
    elif isinstance(body, str):
        text = body
    if text is None:
        return ""
    if not isinstance(text, str):
        text = json.dumps(text)
    shown = " ".join(redact(str(text), server).split())
    if len(shown) > _DETAIL_CHARS:
        shown = shown[: _DETAIL_CHARS - 1] + "…"
    return shown


def _label(server: RemoteServer) -> str:
    return f"server {server.name!r} ({server.base_url})"


def classify(
    exc: BaseException,
    *,
    server: RemoteServer,
    model_id: str | None,
    doing: str,
    streaming: bool = False,
    read_timeout_s: float | None = None,
) -> RemoteError:
    """The :class:`RemoteError` that ``exc`` (from the openai client) stands for.

    ``doing`` completes "while ..." (e.g. "connecting to it"); ``streaming`` says the reply
    had begun, so a broken connection is a dropped stream rather than an unreachable server.
    """
    if isinstance(exc, RemoteError):
        return exc
    # Raised "from None" by the callers: the client's own text may quote the server, which
    # may echo a key. It is logged here with the key cut out.
    logger.debug("%s (%s): %s", doing, server.name, redact(f"{type(exc).__name__}: {exc}", server))
    label = _label(server)
    model = f"model {model_id!r}" if model_id else "the model list"
    if isinstance(exc, openai.APITimeoutError):
        if streaming:
            return ServerTimeoutError(
                f"The reply from {label} stopped: nothing came for "
                f"{read_timeout_s or 0:g} s. The partial reply is kept; retry, or raise "
                "read_timeout_s if the server is just slow."
            )
        return ServerTimeoutError(
            f"{label.capitalize()} did not answer in time while {doing}. It may be overloaded "
            "or still loading the model: retry in a moment, or raise the timeout."
        )
    if isinstance(exc, openai.APIConnectionError):
        reason = redact(str(exc.__cause__ or exc), server)
        if streaming:
            return StreamDroppedError(
                f"The connection to {label} broke mid-reply ({reason}). The partial reply is "
                "kept; retry to get a whole one."
            )
        return ServerUnreachableError(
            f"Cannot reach {label} while {doing} ({reason}). Check that the server is running "
            "and the URL (host, port, http/https) is right, then retry."
        )
    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc, server=server, label=label, model=model, doing=doing)
    if isinstance(exc, openai.APIResponseValidationError | ValueError | TypeError | AttributeError):
        # bad JSON, or a web page that the client could not parse
        return BadResponseError(
            f"{label.capitalize()} sent an answer that is not valid JSON while {doing}. Check "
            "that the URL is its OpenAI-compatible API (it usually ends with /v1)."
        )
    return RemoteError(f"Talking to {label} failed while {doing}: {redact(str(exc), server)}")


def _from_status(
    exc: openai.APIStatusError, *, server: RemoteServer, label: str, model: str, doing: str
) -> RemoteError:
    status = exc.status_code
    detail = server_detail(exc, server)
    said = f": {detail}" if detail else ""
    if status == 401:
        if not server.has_api_key:
            return RemoteAuthError(
                f"{label.capitalize()} wants an API key (401{said}). Add the server again "
                "with api_key=... or api_key_env='VARIABLE'."
            )
        source = f"the variable {server.api_key_env}" if server.api_key_env else "api_key="
        return RemoteAuthError(
            f"{label.capitalize()} refused the API key (401{said}). Check the key "
            f"({source}) and add the server again."
        )
    if status == 403:
        return RemoteAuthError(
            f"{label.capitalize()} does not let this API key use {model} (403{said}). "
            "Check the key's permissions, or pick another model."
        )
    if status == 404:
        return RemoteModelNotFoundError(
            f"{label.capitalize()} does not serve {model} (404{said}). Pick one of the "
            "models it lists, or check that the URL ends with its API path (usually /v1)."
        )
    if status >= 500:
        return RemoteServerError(
            f"{label.capitalize()} failed with HTTP {status} while {doing}{said}. Retry; if it "
            "keeps failing, look at the server's log."
        )
    return RemoteRequestError(
        f"{label.capitalize()} rejected the request (HTTP {status}{said}). If the "
        "conversation is long, shorten it or lower max tokens; else check the settings."
    )
