"""Turn huggingface_hub, HTTP-client and OS errors into :mod:`chatwidget.errors` classes.

The child process classifies its own failures and sends ``(class name, message)`` back, so the
parent never has to unpickle third-party exceptions; :func:`rebuild` turns that pair back into
an error of the right class.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from chatwidget import errors
from chatwidget.errors import DownloadError

#: Error classes the child may name; anything else becomes a plain NetworkError.
_BY_NAME: dict[str, type[DownloadError]] = {
    cls.__name__: cls
    for cls in (
        errors.RepoNotFoundError,
        errors.GatedRepoError,
        errors.RevisionNotFoundError,
        errors.NetworkError,
        errors.StalledDownloadError,
        errors.ServerError,
        errors.DiskFullError,
        errors.CorruptedFileError,
        errors.UnsafeRepoError,
        errors.DownloadCanceledError,
    )
}

# Names of the HTTP client's transport errors (httpx and its fork httpx2 share them).
_TRANSPORT_ERRORS = frozenset(
    {
        "TransportError",
        "NetworkError",
        "ConnectError",
        "ReadError",
        "WriteError",
        "CloseError",
        "TimeoutException",
        "RemoteProtocolError",
        "ProtocolError",
        "ProxyError",
    }
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes / contexts, outermost first, without cycles."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _is_transport_error(exc: BaseException) -> bool:
    return any(
        cls.__module__.startswith("httpx") and cls.__name__ in _TRANSPORT_ERRORS
        for cls in type(exc).__mro__
    )


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def classify(exc: BaseException, *, repo_id: str, revision: str = "main") -> DownloadError:
    """Map any exception raised while listing or downloading ``repo_id`` to a DownloadError.

    The returned error says what the user can do about it; the original is its ``__cause__``
    when the caller raises it ``from exc``.
    """
    if isinstance(exc, DownloadError):
        return exc
    for link in _chain(exc):
        names = _class_names(link)
        if "GatedRepoError" in names:
            return errors.GatedRepoError(
                f"{repo_id} is gated: accept its terms on the hub with your account, then pass a "
                "token with access: ChatWidget(token=...), `hf auth login` or HF_TOKEN."
            )
        if "RepositoryNotFoundError" in names:
            return errors.RepoNotFoundError(
                f"{repo_id} was not found on the hub. Check the spelling; if it is private, pass a "
                "token that can see it: ChatWidget(token=...), `hf auth login` or HF_TOKEN."
            )
        if "RevisionNotFoundError" in names:
            return errors.RevisionNotFoundError(
                f"Revision {revision!r} does not exist in {repo_id}. Use an existing branch, tag "
                "or commit, or 'main'."
            )
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return errors.DiskFullError(
                f"The disk filled up while downloading {repo_id}; the partial file was removed. "
                "Free some disk space (or delete models you no longer use), then retry."
            )
        if "Consistency check failed" in str(link):
            return errors.CorruptedFileError(
                f"A file of {repo_id} arrived with the wrong size and was discarded. Retry the "
                "download; if it keeps failing, the hub or a proxy is serving a broken file."
            )
        status = _status_code(link)
        if status is not None and (status >= 500 or status == 429):
            return errors.ServerError(
                f"The hub answered {status} while downloading {repo_id}. It is a problem on the "
                "server side: retry in a few minutes."
            )
        if "RemoteEntryNotFoundError" in names:
            return errors.ServerError(
                f"The hub listed a file of {repo_id} that it then could not serve. Retry later; "
                "if it persists, the repo may be changing: pin a commit as the revision."
            )
        if _is_transport_error(link):
            return errors.NetworkError(
                f"The connection to the hub broke while downloading {repo_id} "
                f"({type(link).__name__}). Check your network connection and retry; finished "
                "files are kept."
            )
    return errors.NetworkError(
        f"Downloading {repo_id} failed ({type(exc).__name__}: {exc}). Check your network "
        "connection and that the hub is reachable, then retry; finished files are kept."
    )


def describe(error: DownloadError) -> tuple[str, str]:
    """The ``(class name, message)`` pair a child sends to its parent."""
    return type(error).__name__, str(error)


def rebuild(name: str, message: str) -> DownloadError:
    """Rebuild an error the child described with :func:`describe`."""
    cls = _BY_NAME.get(name, errors.NetworkError)
    return cls(message)
