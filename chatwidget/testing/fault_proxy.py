"""A fault-injecting HTTP proxy for OpenAI-compatible servers, on loopback, for tests and benches.

It sits in front of a real server (e.g. ``transformers serve``) and forwards every request.
Server-sent event streams are forwarded one event at a time, re-framed with chunked transfer
encoding as uvicorn sends them, so a client sees the same stream as from the server itself.
Tests arm faults (:meth:`FaultProxy.inject`) the way :class:`~chatwidget.testing.hub.LocalHub`
does for downloads:

- ``status`` (with ``retry_after`` / ``retry_after_ms``): answer at once with an OpenAI-style
  JSON error, without asking the server;
- ``hold``: keep the request waiting before it is forwarded, until ``fault.release()``;
- ``drop_after=N``: forward N events of the stream, then cut the connection mid-reply;
- ``stall_after=N``: forward N events, then send nothing until ``fault.release()``;
- ``garbage="html"`` (a web page instead of the API) or ``garbage="json"`` (SSE whose data is
  not JSON), at the start or after ``garbage_after`` events of the real stream.

``api_key`` makes the proxy check ``Authorization: Bearer <key>`` like ``vllm serve
--api-key`` does (401 otherwise). The key is never forwarded upstream and never logged; the
request log (:attr:`FaultProxy.requests`) says only whether a key came and whether it matched.
The log also says how a stream ended: ``client_disconnected`` is set when the client closed
its side before the server's stream was over, and ``upstream_closed_early`` when the proxy
then closed the server's stream, which is how the server learns of a Stop.

    with FaultProxy("http://127.0.0.1:8000") as proxy:
        client = OpenAI(base_url=proxy.url + "/v1", api_key="EMPTY")
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.client
import json
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

logger = logging.getLogger("chatwidget.testing.fault_proxy")

Garbage = Literal["html", "json"]

#: Headers that describe one connection, not the message; never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
    }
)
_POLL_S = 0.02
_UPSTREAM_TIMEOUT_S = 300.0
_HTML = b"<!doctype html><html><head><title>Welcome</title></head><body>It works!</body></html>"
_BAD_EVENT = b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "x"\n\n'


@dataclass(eq=False)
class ProxyFault:
    """A fault armed by :meth:`FaultProxy.inject`.

    It fires on the ``nth`` request whose path matches ``pattern`` (``fnmatch``) and on the
    following ones, ``times`` times in all (None: forever).
    """

    pattern: str
    method: str | None = None
    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: float | None = None
    message: str | None = None
    hold: bool = False
    drop_after: int | None = None
    stall_after: int | None = None
    garbage: Garbage | None = None
    garbage_after: int = 0
    nth: int = 1
    times: int | None = 1
    matched: int = 0
    fired: int = 0
    triggered: threading.Event = field(default_factory=threading.Event, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def exhausted(self) -> bool:
        """Whether the fault will not fire again."""
        return self.times is not None and self.fired >= self.times

    def release(self) -> None:
        """End a hold or a stall: the request goes on."""
        self._released.set()

    def wait_triggered(self, timeout: float) -> bool:
        """Wait until the fault has fired at least once; False on timeout."""
        return self.triggered.wait(timeout)

    def _matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method.upper():
            return False
        return fnmatch.fnmatchcase(path, self.pattern)


@dataclass(frozen=True)
class ProxyRecord:
    """One request as the proxy saw and answered it. Never holds a key."""

    method: str
    path: str
    status: int
    key_sent: bool  # an Authorization header came
    key_ok: bool | None  # whether it matched the proxy's api_key (None: the proxy checks none)
    stream: bool  # the answer was an event stream
    events_sent: int  # SSE events forwarded to the client
    completed: bool  # the whole answer was sent
    client_disconnected: bool  # the client closed before the server's stream was over
    upstream_closed_early: bool  # the proxy closed the server's stream before its end
    faults: tuple[str, ...] = ()
    ended_at: float | None = None  # time.monotonic() when the proxy was done with it
    body: Any = None  # the request's JSON body (never holds the key, which is a header)


@dataclass
class _OpenRecord:
    method: str
    path: str
    key_sent: bool
    key_ok: bool | None
    faults: tuple[str, ...]
    body: Any = None
    status: int = 0
    stream: bool = False
    events_sent: int = 0
    completed: bool = False
    client_disconnected: bool = False
    upstream_closed_early: bool = False
    ended_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def freeze(self) -> ProxyRecord:
        return ProxyRecord(
            method=self.method,
            path=self.path,
            status=self.status,
            key_sent=self.key_sent,
            key_ok=self.key_ok,
            stream=self.stream,
            events_sent=self.events_sent,
            completed=self.completed,
            client_disconnected=self.client_disconnected,
            upstream_closed_early=self.upstream_closed_early,
            faults=self.faults,
            ended_at=self.ended_at,
            body=self.body,
        )


class _ClientGoneError(Exception):
    """The client closed its connection."""


class _CutError(Exception):
    """The proxy cuts the connection on purpose (a drop fault, or the proxy stopping)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("error while proxying for %s: %r", client_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "chatwidget-fault-proxy/1"
    timeout = 120

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # -- one request

    def _serve(self, method: str) -> None:
        proxy = self.server.proxy
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        faults = proxy._fire_faults(method, path)
        key_ok = proxy._check_key(self.headers.get("Authorization"))
        self._record = proxy._open_record(
            method=method,
            path=path,
            key_sent=self.headers.get("Authorization") is not None,
            key_ok=key_ok,
            faults=tuple(_fault_kinds(faults)),
            body=_json_or_none(body),
        )
        try:
            for fault in faults:
                if fault.hold:
                    self._wait_released(fault)
            if key_ok is False:
                self._send_error(401, "Invalid API key: pass the key the server was given.")
                return
            for fault in faults:
                if fault.status is not None:
                    self._send_error(fault.status, fault.message, fault)
                    return
            early = next((f for f in faults if f.garbage and f.garbage_after == 0), None)
            if early is not None:
                self._send_garbage(early.garbage or "html", stream=_wants_stream(body))
                return
            self._forward(method, body, faults)
        except _ClientGoneError:
            self._record.client_disconnected = True
            self.close_connection = True
        except _CutError:
            self._abort()
        except OSError:
            self._record.client_disconnected = True
            self.close_connection = True
        except Exception:
            logger.exception("fault proxy failed on %s %s", method, self.path)
            self._abort()
        finally:
            self._record.ended_at = time.monotonic()
            self._record.done.set()

    def _forward(self, method: str, body: bytes, faults: list[ProxyFault]) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(
            proxy.upstream_host, proxy.upstream_port, timeout=_UPSTREAM_TIMEOUT_S
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(method, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            content_type = response.getheader("Content-Type", "")
            if content_type.startswith("text/event-stream"):
                self._forward_stream(response, faults)
            else:
                self._forward_whole(response)
        finally:
            upstream.close()

    def _forward_whole(self, response: http.client.HTTPResponse) -> None:
        data = response.read()
        self._record.status = response.status
        self.send_response(response.status)
        self._copy_headers(response)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._record.completed = True

    def _forward_stream(self, response: http.client.HTTPResponse, faults: list[ProxyFault]) -> None:
        record = self._record
        record.status, record.stream = response.status, True
        self.send_response(response.status)
        self._copy_headers(response)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        drop = min((f.drop_after for f in faults if f.drop_after is not None), default=None)
        stalls = [f for f in faults if f.stall_after is not None]
        garbage = next((f for f in faults if f.garbage and f.garbage_after > 0), None)
        finished = False
        try:
            for event in _sse_events(response):
                sent = record.events_sent
                if drop is not None and sent >= drop:
                    raise _CutError
                if garbage is not None and sent >= garbage.garbage_after:
                    self._write_chunk(_BAD_EVENT)
                    break
                for stall in stalls:
                    if stall.stall_after == sent:
                        self._wait_released(stall)
                self._check_client()
                self._write_chunk(event)
                record.events_sent += 1
            else:
                finished = True
            self._write_chunk(b"")  # the last chunk: a clean end of the stream
            record.completed = True
        finally:
            if not finished:
                record.upstream_closed_early = True

    # -- helpers

    def _copy_headers(self, response: http.client.HTTPResponse) -> None:
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _check_client(self) -> None:
        """Raise _ClientGoneError when the client has closed its side (EOF or reset)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            gone = bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError as exc:  # reset by the peer
            raise _ClientGoneError from exc
        if gone:
            raise _ClientGoneError

    def _wait_released(self, fault: ProxyFault) -> None:
        proxy = self.server.proxy
        while not fault._released.wait(_POLL_S):
            if proxy._closing.is_set():
                raise _CutError
            self._check_client()

    def _send_error(
        self, status: int, message: str | None, fault: ProxyFault | None = None
    ) -> None:
        text = message or f"injected fault: status {status}"
        payload = {"error": {"message": text, "type": _error_type(status), "code": status}}
        data = json.dumps(payload).encode()
        self._record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if fault is not None and fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        if fault is not None and fault.retry_after_ms is not None:
            self.send_header("retry-after-ms", f"{fault.retry_after_ms:g}")
        self.end_headers()
        self.wfile.write(data)
        self._record.completed = True

    def _send_garbage(self, kind: Garbage, *, stream: bool) -> None:
        self._record.status = 200
        self.send_response(200)
        if kind == "html":
            data, content_type = _HTML, "text/html; charset=utf-8"
        elif stream:
            data, content_type = _BAD_EVENT, "text/event-stream; charset=utf-8"
        else:
            data, content_type = b'{"id": "chatcmpl-broken", "choices": [', "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._record.completed = True

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _sse_events(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The response body cut into whole SSE events (each ends with a blank line)."""
    lines: list[bytes] = []
    while True:
        line = response.readline()
        if not line:
            if lines:
                yield b"".join(lines)
            return
        lines.append(line)
        if line in (b"\n", b"\r\n"):
            yield b"".join(lines)
            lines = []


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _wants_stream(body: bytes) -> bool:
    request = _json_or_none(body)
    return isinstance(request, dict) and request.get("stream") is True


def _error_type(status: int) -> str:
    return {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _fault_kinds(faults: list[ProxyFault]) -> Iterator[str]:
    for fault in faults:
        for kind, on in (
            ("status", fault.status is not None),
            ("hold", fault.hold),
            ("drop", fault.drop_after is not None),
            ("stall", fault.stall_after is not None),
            ("garbage", fault.garbage is not None),
        ):
            if on:
                yield kind


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` (``http://host:port``), with faults.

    ``api_key``: answer 401 unless requests carry ``Authorization: Bearer <api_key>``.
    """

    def __init__(
        self,
        upstream: str,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self._api_key = api_key
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._faults: list[ProxyFault] = []
        self._requests: list[_OpenRecord] = []
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        state = self.url if self._server is not None else "stopped"
        return f"FaultProxy({state} -> {self.upstream_host}:{self.upstream_port}, api_key={key})"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``; the OpenAI API is under ``/v1``."""
        if self._server is None:
            raise RuntimeError("the proxy is not running: call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._closing.clear()
        server = _Server((self._host, self._port), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="chatwidget-fault-proxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, cut open connections (held ones included) and join all threads."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._closing.set()
        server.shutdown()
        thread.join(timeout)
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for handler_thread in conns.values():
            handler_thread.join(max(0.0, deadline - time.monotonic()))
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and log

    def inject(
        self,
        path: str = "*",
        *,
        method: str | None = None,
        status: int | None = None,
        retry_after: str | None = None,
        retry_after_ms: float | None = None,
        message: str | None = None,
        hold: bool = False,
        drop_after: int | None = None,
        stall_after: int | None = None,
        garbage: Garbage | None = None,
        garbage_after: int = 0,
        nth: int = 1,
        times: int | None = 1,
    ) -> ProxyFault:
        """Arm a fault for requests whose path matches the glob ``path`` (see the module doc).

        ``drop_after``, ``stall_after`` and ``garbage_after`` count SSE events of the stream.
        It fires on the ``nth`` matching request and the next ones, ``times`` in all.
        """
        if nth < 1 or (times is not None and times < 1):
            raise ValueError("nth and times must be at least 1 (times=None: every time).")
        fault = ProxyFault(
            pattern=path,
            method=method,
            status=status,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            message=message,
            hold=hold,
            drop_after=drop_after,
            stall_after=stall_after,
            garbage=garbage,
            garbage_after=garbage_after,
            nth=nth,
            times=times,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Disarm all faults and release any held or stalled request."""
        with self._lock:
            faults, self._faults = self._faults, []
        for fault in faults:
            fault.release()

    @property
    def requests(self) -> list[ProxyRecord]:
        """A copy of the request log, in order of arrival."""
        with self._lock:
            return [record.freeze() for record in self._requests]

    def wait_done(self, count: int, timeout: float) -> list[ProxyRecord]:
        """Wait until at least ``count`` requests are logged and all logged ones are finished.

        Returns the log; raises TimeoutError if that does not happen in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                records = list(self._requests)
            if len(records) >= count and all(r.done.is_set() for r in records):
                return [r.freeze() for r in records]
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the proxy saw {len(records)} requests, "
                    f"{sum(not r.done.is_set() for r in records)} unfinished, after {timeout} s"
                )
            pending = next((r for r in records if not r.done.is_set()), None)
            if pending is not None:
                pending.done.wait(_POLL_S)
            else:
                time.sleep(_POLL_S)  # waiting for a request the client has yet to send

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Back to a clean state between tests: no faults, empty log."""
        self.clear_faults()
        self.clear_requests()

    def _check_key(self, header: str | None) -> bool | None:
        if self._api_key is None:
            return None
        if not header or not header.lower().startswith("bearer "):
            return False
        return header[7:].strip() == self._api_key

    def _fire_faults(self, method: str, path: str) -> list[ProxyFault]:
        fired = []
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault._matches(method, path):
                    continue
                fault.matched += 1
                if fault.matched >= fault.nth:
                    fault.fired += 1
                    fired.append(fault)
        for fault in fired:
            fault.triggered.set()
        return fired

    def _open_record(
        self,
        *,
        method: str,
        path: str,
        key_sent: bool,
        key_ok: bool | None,
        faults: tuple[str, ...],
        body: Any,
    ) -> _OpenRecord:
        record = _OpenRecord(method, path, key_sent, key_ok, faults, body)
        with self._lock:
            self._requests.append(record)
        return record

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)
