"""The remote engine: models on OpenAI-compatible servers, behind the local engine's port.

It has the shape of :class:`chatwidget.orchestrator.ports.EnginePort`, for model keys
``"{server}:{model id}"``:

- ``load`` is "Connecting": one cheap request (a one-token reply) proves that the server
  answers, the key is accepted and the model exists; the model is then "loaded" (Ready);
- ``generate`` streams a reply (see :mod:`chatwidget.engine.remote.stream`);
- ``check_fit`` always fits: a remote model takes no memory here;
- removing a server drops its models, reported through ``on_evict`` as an eviction.

A 429 is retried with backoff that honours Retry-After; each wait is announced to the
``on_notice`` subscribers first (:class:`RemoteNotice`). Replies on one remote model may run
side by side: the server batches them. API keys stay inside the ``openai`` clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from chatwidget.catalog import ModelSpec, remote_key, split_remote_key
from chatwidget.engine.remote.servers import ApiKey, RemoteServer, ServerRegistry
from chatwidget.engine.remote.thread_pool import ThreadPool
from chatwidget.engine.remote.types import RemoteModel, RemoteNotice, RemoteSettings
from chatwidget.engine.types import (
    FitReport,
    GenerationResult,
    GenerationSettings,
    LoadReport,
    Usage,
)
from chatwidget.errors import (
    BadResponseError,
    InvalidRepoIdError,
    LoadCanceledError,
    ModelNotLoadedError,
    RemoteError,
    RemoteModelNotFoundError,
    RemoteRequestError,
)

if TYPE_CHECKING:
    import openai

# The openai client and the modules that use it are imported on first use: importing
# chatwidget (and making a widget) must not pay for them when no server is ever added.

logger = logging.getLogger("chatwidget.engine.remote")

#: The message of the Connecting check; any chat model can answer it with one token.
PROBE_MESSAGES: tuple[dict[str, str], ...] = ({"role": "user", "content": "Hi"},)
#: Placeholder sent as the key to servers without one (vLLM's and SGLang's docs use it).
NO_KEY = "EMPTY"
_WAIT_SLICE_S = 0.05


def _request_errors() -> tuple[type[Exception], ...]:
    """What a request may raise: the client's errors, and parse errors on an answer that is
    not the API (the client hands on a web page as text, which then fails to parse)."""
    import openai

    return (openai.OpenAIError, ValueError, TypeError, AttributeError)


_LISTED_IN_ERRORS = 8


class RemoteEngine:
    """Connects to, and streams replies from, models on the servers in ``servers``."""

    def __init__(
        self, servers: ServerRegistry | None = None, *, settings: RemoteSettings | None = None
    ) -> None:
        self.servers = servers if servers is not None else ServerRegistry()
        self.settings = settings if settings is not None else RemoteSettings()
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[RemoteServer, ApiKey | None, openai.OpenAI]] = {}
        self._connected: dict[str, RemoteServer] = {}
        self._evict_callbacks: list[Callable[[str], None]] = []
        self._notice_callbacks: list[Callable[[RemoteNotice], None]] = []
        self._active: set[threading.Event] = set()
        self._closing = threading.Event()
        self._watchers = ThreadPool("chatwidget-remote-stop")  # stop watchers, reused

    def __repr__(self) -> str:
        with self._lock:
            connected = sorted(self._connected)
        return f"RemoteEngine(servers={self.servers!r}, connected={connected})"

    # --- servers ----------------------------------------------------------------------

    def add_server(
        self,
        base_url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
    ) -> RemoteServer:
        """Add (or re-key) a server; see :meth:`ServerRegistry.add`. Nothing is requested."""
        server = self.servers.add(base_url, name=name, api_key=api_key, api_key_env=api_key_env)
        self._drop_client(server.name)
        return server

    def remove_server(self, name: str) -> tuple[str, ...]:
        """Forget a server; its connected models are dropped and reported to ``on_evict``.

        Returns the keys that were dropped.
        """
        self.servers.remove(name)
        self._drop_client(name)
        with self._lock:
            keys = tuple(k for k, s in self._connected.items() if s.name == name)
            for key in keys:
                del self._connected[key]
            callbacks = list(self._evict_callbacks)
        for key in keys:
            for callback in callbacks:
                try:
                    callback(key)
                except Exception:
                    logger.exception("on_evict callback failed for %s", key)
        return keys

    def list_models(self, server_name: str) -> tuple[RemoteModel, ...]:
        """The models ``GET /v1/models`` lists on a server, as keys this engine can load.

        Raises the same remote errors as Connecting (unreachable, 401, ...).
        """
        from chatwidget.engine.remote.errors_map import classify
        from chatwidget.engine.remote.retry import InterruptedWaitError, call_with_retries

        server = self.servers.get(server_name)
        client = self._client(server)
        try:
            page = call_with_retries(
                lambda: client.models.list(timeout=self._timeout(self.settings.probe_timeout_s)),
                settings=self.settings,
                label=f"Server {server.name!r}",
                model=f"{server.name}:",
                phase="listing",
                notify=self._notify,
                wait=lambda seconds: self._wait(seconds, ()),
            )
        except InterruptedWaitError:
            raise LoadCanceledError(
                "The model listing was interrupted: the engine closed."
            ) from None
        except _request_errors() as exc:
            raise classify(exc, server=server, model_id=None, doing="listing its models") from None
        data = getattr(page, "data", None)
        if not isinstance(data, list):
            raise BadResponseError(
                f"Server {server.name!r} ({server.base_url}) did not answer GET /models with a "
                "model list. Check that the URL is its OpenAI-compatible API (usually …/v1)."
            )
        models = []
        for item in data:
            model_id = getattr(item, "id", None)
            try:
                key = remote_key(server.name, model_id) if isinstance(model_id, str) else None
            except InvalidRepoIdError:
                key = None
            if key is None or not isinstance(model_id, str):
                logger.warning("server %s lists an unusable model id %r", server.name, model_id)
                continue
            models.append(RemoteModel(server.name, model_id, key, getattr(item, "owned_by", None)))
        return tuple(models)

    def model_specs(self, server_name: str) -> tuple[ModelSpec, ...]:
        """:class:`ModelSpec` for every model a server lists (for the selector)."""
        return tuple(
            ModelSpec(m.key, name=m.model_id, extra={"server": m.server})
            for m in self.list_models(server_name)
        )

    def on_notice(self, callback: Callable[[RemoteNotice], None]) -> Callable[[], None]:
        """Call ``callback(notice)`` before each wait (429); returns the unsubscribe function."""
        with self._lock:
            self._notice_callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._notice_callbacks:
                    self._notice_callbacks.remove(callback)

        return unsubscribe

    # --- the engine port ----------------------------------------------------------------

    def is_loaded(self, repo_id: str) -> bool:
        """True when the model was connected (Ready) and its server is still there."""
        with self._lock:
            return repo_id in self._connected

    def loaded_models(self) -> list[str]:
        """Connected model keys."""
        with self._lock:
            return list(self._connected)

    def on_evict(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(key)`` when a model is dropped because its server was removed."""
        with self._lock:
            self._evict_callbacks.append(callback)

    def check_fit(self, spec: ModelSpec, *, keep: Sequence[str] = ()) -> FitReport:
        """A remote model always fits: it takes no memory in this kernel."""
        server, _ = self._split(spec.repo_id)
        return FitReport(
            repo_id=spec.repo_id,
            required_bytes=0,
            available_bytes=0,
            fits=True,
            fits_beside_loaded=True,
            device=f"remote:{server}",
            message=f"{spec.repo_id} runs on server {server!r}; it takes no memory here.",
        )

    def load(
        self,
        spec: ModelSpec,
        *,
        keep: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> LoadReport:
        """Connect ("Connecting"): one one-token reply proves server, key and model.

        Raises a :class:`RemoteError` that says what to do when it fails. Setting ``cancel``
        ends it at once with LoadCanceledError (a request in flight is left to time out on
        its own thread, and its answer is dropped).
        """
        key = spec.repo_id
        server_name, model_id = self._split(key)
        server = self.servers.get(server_name)
        started_at = time.time()
        t0 = time.perf_counter()
        if cancel is None:
            self._probe(server, key, model_id, ())
        else:
            self._probe_cancelable(server, key, model_id, cancel)
        duration = time.perf_counter() - t0
        with self._lock:
            self._connected[key] = server
        logger.info("connected to %s on %s in %.2fs", model_id, server.name, duration)
        return LoadReport(
            repo_id=key,
            started_at=started_at,
            duration_s=duration,
            memory_bytes=0,
            device_map={"": f"remote:{server.name}"},
            cold_swap=False,
            evicted=(),
        )

    def unload(self, repo_id: str) -> None:
        """Forget that the model was connected. Unknown keys are ignored."""
        with self._lock:
            self._connected.pop(repo_id, None)

    def generate(
        self,
        repo_id: str,
        messages: Sequence[Mapping[str, str]],
        settings: GenerationSettings,
        *,
        on_text: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> GenerationResult:
        """Stream a reply from a connected model; same messages in, same result out as local.

        Setting ``stop`` ends it: the kernel reads at most one more chunk and closes the
        connection; the partial text is returned with ``stopped=True``. Failures raise a
        :class:`RemoteError` whose ``partial_text`` is what had streamed.
        """
        from chatwidget.engine.remote.errors_map import classify
        from chatwidget.engine.remote.retry import InterruptedWaitError, call_with_retries
        from chatwidget.engine.remote.stream import open_stream, request_args, stream_reply
        from chatwidget.engine.streaming import build_chat, validate_request

        validate_request(messages, settings)
        with self._lock:
            server = self._connected.get(repo_id)
        if server is None:
            raise ModelNotLoadedError(
                f"{repo_id} is not connected; select it (it goes through Connecting) first."
            )
        _, model_id = self._split(repo_id)
        args = request_args(model_id, build_chat(messages, settings.system_prompt), settings)
        halt = threading.Event()
        stops = (halt,) if stop is None else (stop, halt)
        with self._lock:
            self._active.add(halt)
        started = time.perf_counter()
        try:
            if self._closing.is_set() or any(e.is_set() for e in stops):
                return _stopped(repo_id, started)
            client = self._client(server)
            try:
                stream = call_with_retries(
                    lambda: open_stream(client, args),
                    settings=self.settings,
                    label=f"Server {server.name!r}",
                    model=repo_id,
                    phase="reply",
                    notify=self._notify,
                    wait=lambda seconds: self._wait(seconds, stops),
                )
            except InterruptedWaitError:
                return _stopped(repo_id, started)
            except _request_errors() as exc:
                raise classify(
                    exc, server=server, model_id=model_id, doing="starting the reply"
                ) from None
            return stream_reply(
                stream,
                server=server,
                key=repo_id,
                model_id=model_id,
                read_timeout_s=self.settings.read_timeout_s,
                on_text=on_text,
                stops=stops,
                started=started,
                threads=self._watchers,
            )
        finally:
            with self._lock:
                self._active.discard(halt)

    def close(self) -> None:
        """Stop replies in flight, interrupt waits, forget connections, close clients."""
        self._closing.set()
        with self._lock:
            for event in self._active:
                event.set()
            clients = [entry[2] for entry in self._clients.values()]
            self._clients.clear()
            self._connected.clear()
        self._watchers.close()
        for client in clients:
            try:
                client.close()
            except Exception:
                logger.debug("closing an openai client failed", exc_info=True)

    # --- internals --------------------------------------------------------------------

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        parts = split_remote_key(key)
        if parts is None:
            raise InvalidRepoIdError(
                f"{key!r} is not a remote model key: use 'server:model id', e.g. 'gpu:org/name'."
            )
        return parts

    def _timeout(self, read_s: float) -> openai.Timeout:
        import openai

        return openai.Timeout(read_s, connect=self.settings.connect_timeout_s)

    def _client(self, server: RemoteServer) -> openai.OpenAI:
        """The openai client of ``server``; rebuilt when the server or its key changed."""
        import openai

        key = server.api_key()
        with self._lock:
            cached = self._clients.get(server.name)
            if cached is not None and cached[0] is server and cached[1] == key:
                return cached[2]
            client = openai.OpenAI(
                base_url=server.base_url,
                api_key=key.reveal() if key is not None else NO_KEY,
                timeout=self._timeout(self.settings.read_timeout_s),
                max_retries=0,  # 429s are retried here, where the wait can be shown
            )
            self._clients[server.name] = (server, key, client)
        if cached is not None:
            cached[2].close()
        return client

    def _drop_client(self, name: str) -> None:
        with self._lock:
            cached = self._clients.pop(name, None)
        if cached is not None:
            cached[2].close()

    def _probe_cancelable(
        self, server: RemoteServer, key: str, model_id: str, cancel: threading.Event
    ) -> None:
        """:meth:`_probe` on a helper thread, given up as soon as ``cancel`` is set."""
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def run() -> None:
            try:
                self._probe(server, key, model_id, (cancel,))
                outcome.append(None)
            except BaseException as exc:  # handed to the caller below
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name="chatwidget-remote-connect", daemon=True).start()
        while not done.wait(_WAIT_SLICE_S):
            if cancel.is_set() or self._closing.is_set():
                raise LoadCanceledError(f"Connecting to {key} was canceled.")
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def _probe(
        self, server: RemoteServer, key: str, model_id: str, stops: Sequence[threading.Event]
    ) -> None:
        from openai.types.chat import ChatCompletion

        from chatwidget.engine.remote.errors_map import classify
        from chatwidget.engine.remote.retry import InterruptedWaitError, call_with_retries

        client = self._client(server)
        try:
            reply = call_with_retries(
                lambda: client.chat.completions.create(
                    model=model_id,
                    messages=list(PROBE_MESSAGES),  # type: ignore[arg-type]
                    max_tokens=1,
                    temperature=0.0,
                    stream=False,
                    timeout=self._timeout(self.settings.probe_timeout_s),
                ),
                settings=self.settings,
                label=f"Server {server.name!r}",
                model=key,
                phase="connecting",
                notify=self._notify,
                wait=lambda seconds: self._wait(seconds, stops),
            )
        except InterruptedWaitError:
            raise LoadCanceledError(
                f"Connecting to {key} was canceled, or the engine closed."
            ) from None
        except _request_errors() as exc:
            error = classify(
                exc, server=server, model_id=model_id, doing="connecting (a one-token test reply)"
            )
            if isinstance(error, RemoteRequestError | RemoteModelNotFoundError):
                error = self._explain_unknown_model(server, model_id, error)
            raise error from None
        if not isinstance(reply, ChatCompletion) or not reply.choices:
            raise BadResponseError(
                f"Server {server.name!r} ({server.base_url}) did not answer the test request "
                "with a chat completion. Check that the URL is its OpenAI-compatible API "
                "(it usually ends with /v1)."
            )

    def _explain_unknown_model(
        self, server: RemoteServer, model_id: str, error: RemoteError
    ) -> RemoteError:
        """Turn a 400/404 into "not served here, it serves ..." when the listing says so."""
        try:
            listed = [m.model_id for m in self.list_models(server.name)]
        except (RemoteError, LoadCanceledError):
            return error
        if model_id in listed:
            return error
        shown = ", ".join(repr(m) for m in listed[:_LISTED_IN_ERRORS]) or "no models"
        hidden = len(listed) - _LISTED_IN_ERRORS
        more = f" and {hidden} more" if hidden > 0 else ""
        return RemoteModelNotFoundError(
            f"Server {server.name!r} does not serve {model_id!r}; it serves {shown}{more}. "
            "Pick one of those."
        )

    def _notify(self, notice: RemoteNotice) -> None:
        with self._lock:
            callbacks = list(self._notice_callbacks)
        for callback in callbacks:
            try:
                callback(notice)
            except Exception:
                logger.exception("on_notice callback failed for %s", notice.model)

    def _wait(self, seconds: float, stops: Sequence[threading.Event]) -> bool:
        """Wait ``seconds``; True (at once) if a stop event is set or the engine closes."""
        events = (*stops, self._closing)
        deadline = time.monotonic() + seconds
        while True:
            if any(e.is_set() for e in events):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            events[0].wait(min(left, _WAIT_SLICE_S))


def _stopped(repo_id: str, started: float) -> GenerationResult:
    usage = Usage(
        model=repo_id,
        prompt_tokens=0,
        new_tokens=0,
        time_to_first_token_s=None,
        tokens_per_s=None,
        duration_s=time.perf_counter() - started,
    )
    return GenerationResult(text="", stopped=True, usage=usage)


__all__ = ["RemoteEngine"]
