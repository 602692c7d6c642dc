"""The servers a kernel knows: names, base URLs and API keys, which never leave the kernel.

A server is an OpenAI-compatible endpoint (vLLM, SGLang, Ray Serve LLM, llm-d, ``transformers
serve``). Its models are addressed as ``"{name}:{model id}"``. The API key is held by an
:class:`ApiKey`, whose ``repr`` and ``str`` never show it; a key named by ``api_key_env`` is
read from the environment each time a client is built, so rotating the variable works.
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import urlsplit

from chatwidget.catalog import SERVER_NAME
from chatwidget.errors import (
    InvalidServerError,
    MissingApiKeyError,
    ServerExistsError,
    UnknownServerError,
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_JUNK = re.compile(r"[^A-Za-z0-9._-]+")
#: The base URL path used when the URL has none: every supported server serves the API at /v1.
DEFAULT_API_PATH = "/v1"


class ApiKey:
    """A secret that prints as ``ApiKey(***)``. Call :meth:`reveal` only to send it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the Authorization header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("ApiKey", len(self._value)))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an API key cannot be pickled: it stays in this kernel")


class RemoteServer:
    """One server: its ``name``, normalized ``base_url`` and where its key comes from.

    Immutable; replacing a server's key makes a new object (see :meth:`ServerRegistry.add`).
    """

    __slots__ = ("_key", "api_key_env", "base_url", "name")

    def __init__(
        self, name: str, base_url: str, *, api_key: ApiKey | None, api_key_env: str | None
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.api_key_env = api_key_env
        self._key = api_key

    @property
    def has_api_key(self) -> bool:
        """Whether requests carry a key (given directly or through ``api_key_env``)."""
        return self._key is not None or self.api_key_env is not None

    def api_key(self) -> ApiKey | None:
        """The key to send now; raises MissingApiKeyError if its variable was unset since."""
        if self.api_key_env is None:
            return self._key
        return _key_from_env(self.api_key_env, self.name)

    def __repr__(self) -> str:
        if self.api_key_env is not None:
            key = f"api_key_env={self.api_key_env!r}"
        else:
            key = f"api_key={'set' if self._key is not None else None}"
        return f"RemoteServer(name={self.name!r}, base_url={self.base_url!r}, {key})"


def normalize_base_url(url: object) -> str:
    """``url`` as ``scheme://host[:port]/path``, without a trailing slash; ``/v1`` if no path.

    Only http and https are accepted; credentials, a query or a fragment in the URL are
    refused (a key belongs in ``api_key``, where it stays out of every repr and message).
    Error messages do not repeat a URL that may hold credentials.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidServerError(
            "A server URL is a string such as 'http://host:8000/v1' (the OpenAI-compatible "
            "base URL): pass one."
        )
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InvalidServerError(
            "That server URL could not be parsed (check the host and the port number), "
            "e.g. 'http://host:8000/v1'."
        ) from None
    if parts.username is not None or parts.password is not None:
        raise InvalidServerError(
            "A server URL must not hold a user name or key ('https://user:key@host'): "
            "pass the key as api_key= (or api_key_env=) instead, where it stays secret."
        )
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise InvalidServerError(
            f"Only http:// and https:// server URLs are accepted, not {shown}: "
            "use e.g. 'http://host:8000/v1'."
        )
    if not parts.hostname:
        raise InvalidServerError(
            "The server URL has no host: use e.g. 'http://host:8000/v1' or 'https://host/v1'."
        )
    if parts.query or parts.fragment:
        raise InvalidServerError(
            "A server URL must not have a query ('?...') or fragment ('#...'): "
            "give the base URL only, e.g. 'http://host:8000/v1', and any key as api_key=."
        )
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = parts.path.rstrip("/") or DEFAULT_API_PATH
    return f"{scheme}://{netloc}{path}"


def _key_from_env(variable: str, server: str) -> ApiKey:
    value = os.environ.get(variable)
    if not value:
        raise MissingApiKeyError(
            f"The API key of server {server!r} comes from the environment variable "
            f"{variable}, which is not set: set it (e.g. os.environ[{variable!r}] = ...) and "
            "try again, or pass api_key= instead."
        )
    return ApiKey(value)


class ServerRegistry:
    """The servers of one runtime, by name. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[str, RemoteServer] = {}

    def add(
        self,
        base_url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
    ) -> RemoteServer:
        """Add a server and return it.

        ``name`` defaults to the URL's host. Adding the same name and URL again replaces
        its key; the same name with another URL raises ServerExistsError (remove it first).
        ``api_key`` is the key itself; ``api_key_env`` names an environment variable that
        holds it (it must be set now). Give at most one of them.
        """
        url = normalize_base_url(base_url)
        key = _check_key_args(api_key, api_key_env)
        if api_key_env is not None:
            _key_from_env(api_key_env, name or url)  # must be set now: fail early and clearly
        with self._lock:
            chosen = self._choose_name(name, url)
            known = self._servers.get(chosen)
            if known is not None and known.base_url != url:
                raise ServerExistsError(
                    f"A server named {chosen!r} already points at {known.base_url}: pick "
                    "another name, or remove that server first."
                )
            server = RemoteServer(chosen, url, api_key=key, api_key_env=api_key_env)
            self._servers[chosen] = server
            return server

    def remove(self, name: str) -> RemoteServer:
        """Forget a server and return it; raises UnknownServerError if there is none."""
        with self._lock:
            server = self._servers.pop(name, None)
        if server is None:
            raise self._unknown(name)
        return server

    def get(self, name: str) -> RemoteServer:
        """The server called ``name``; raises UnknownServerError if there is none."""
        with self._lock:
            server = self._servers.get(name)
        if server is None:
            raise self._unknown(name)
        return server

    def servers(self) -> tuple[RemoteServer, ...]:
        """Every server, in the order they were added."""
        with self._lock:
            return tuple(self._servers.values())

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._servers

    def __repr__(self) -> str:
        return f"ServerRegistry({', '.join(s.name for s in self.servers()) or 'empty'})"

    def _choose_name(self, name: str | None, url: str) -> str:
        if name is not None:
            if not isinstance(name, str) or not SERVER_NAME.match(name):
                raise InvalidServerError(
                    f"{name!r} is not a valid server name: use 1 to 64 letters, digits, '.', "
                    "'_' or '-', starting with a letter or digit (e.g. 'gpu')."
                )
            return name
        host = urlsplit(url).hostname or "server"
        base = _NAME_JUNK.sub("-", host).strip("-._")[:48] or "server"
        candidate, n = base, 1
        while candidate in self._servers and self._servers[candidate].base_url != url:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _unknown(self, name: str) -> UnknownServerError:
        with self._lock:
            names = ", ".join(self._servers) or "none"
        return UnknownServerError(
            f"No server named {name!r} was added (servers: {names}): add it with "
            "add_server(base_url, name=...) first."
        )


def _check_key_args(api_key: object, api_key_env: object) -> ApiKey | None:
    if api_key is not None and api_key_env is not None:
        raise InvalidServerError(
            "Give either api_key= (the key) or api_key_env= (the name of an environment "
            "variable that holds it), not both."
        )
    if api_key_env is not None and (
        not isinstance(api_key_env, str) or not _ENV_NAME.match(api_key_env)
    ):
        raise InvalidServerError(
            "api_key_env must be the name of an environment variable, such as "
            "'VLLM_API_KEY' (letters, digits and '_'), not the key itself."
        )
    if api_key is None:
        return None
    if not isinstance(api_key, str) or not api_key.strip():
        raise InvalidServerError(
            "api_key must be a non-empty string (or None for a server without a key)."
        )
    if any(c.isspace() or not c.isprintable() for c in api_key.strip()):
        raise InvalidServerError(
            "api_key holds spaces or control characters: paste the key alone, without quotes."
        )
    return ApiKey(api_key.strip())
