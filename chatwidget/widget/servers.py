"""The servers one widget added: their models in the selector, their status, 429 waits.

A :class:`ServerBook` sits between a widget and the runtime's shared
:class:`~chatwidget.engine.remote.RemoteEngine`. Adding a server registers it (the API key
stays in the engine's registry) and lists its models on a helper thread; the models it lists
join the session's catalog as ``"{server}:{model id}"`` keys. What the widget publishes
(:meth:`ServerBook.rows`) is the name, base URL, status, models and the wait in progress,
never the key.

A notice from the engine (a 429 answered with Retry-After) is shown while its wait lasts:
a timer marks the servers changed when it runs out, and a notice about a Connecting model or
a reply disappears as soon as that is over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

from chatwidget.catalog import split_remote_key
from chatwidget.errors import InvalidServerError
from chatwidget.failure import failure_of
from chatwidget.orchestrator import ModelState
from chatwidget.widget.protocol import RemoteNoticeRow, ServerRow, ServerStatus

if TYPE_CHECKING:
    from chatwidget.engine.remote import RemoteEngine, RemoteNotice
    from chatwidget.session import Session

log = logging.getLogger("chatwidget.widget.servers")

#: The trait the widget shows :meth:`ServerBook.rows` in.
TRAIT = "servers"
#: How long :meth:`ServerBook.close` waits for a listing in flight (it is then dropped).
CLOSE_WAIT_S = 2.0

#: What ``ChatWidget(servers=...)`` accepts: ``{name: base_url}``, ``{name: {options}}``,
#: or a list of base URLs or of ``{"base_url", "name", "api_key", "api_key_env"}``.
ServersArg: TypeAlias = (
    Mapping[str, "str | Mapping[str, Any]"] | Iterable["str | Mapping[str, Any]"] | None
)
_SERVER_OPTIONS = ("base_url", "name", "api_key", "api_key_env")


def server_args(servers: ServersArg) -> list[dict[str, Any]]:
    """``servers=`` as keyword arguments of :meth:`ServerBook.add`, one per server.

    Raises InvalidServerError (saying what shape to use) for anything else; the error
    never repeats the values given, which may hold a key.
    """
    if servers is None:
        return []
    shape = (
        "Give servers= as {'gpu': 'http://host:8000/v1'}, or a list of base URLs or of "
        "{'base_url': ..., 'name': ..., 'api_key': ... or 'api_key_env': ...}."
    )
    if isinstance(servers, str):
        raise InvalidServerError(f"servers= is a single string: {shape}")
    items: list[tuple[str | None, object]]
    if isinstance(servers, Mapping):
        items = [(name, value) for name, value in servers.items()]
    else:
        items = [(None, value) for value in servers]
    out: list[dict[str, Any]] = []
    for name, value in items:
        if isinstance(value, str):
            args: dict[str, Any] = {"base_url": value}
        elif isinstance(value, Mapping) and "base_url" in value:
            unknown = sorted(str(k) for k in value if k not in _SERVER_OPTIONS)
            if unknown:
                raise InvalidServerError(
                    f"Unknown server option(s) {', '.join(unknown)}: use "
                    f"{', '.join(_SERVER_OPTIONS)}."
                )
            args = dict(value)
        else:
            raise InvalidServerError(shape)
        if name is not None:
            if "name" in args and args["name"] != name:
                raise InvalidServerError(
                    f"Server {name!r} has another name inside its options: give it once."
                )
            args["name"] = name
        out.append(args)
    return out


@dataclass(frozen=True)
class _Entry:
    name: str
    base_url: str
    has_api_key: bool
    status: ServerStatus = "listing"
    models: tuple[str, ...] = ()
    error: str | None = None
    action: str | None = None
    can_retry: bool = False
    generation: int = 0  # which listing this state is from (a newer one wins)


@dataclass(frozen=True)
class _Notice:
    seq: int
    notice: RemoteNotice
    until: float  # time.monotonic() when the wait ends


@dataclass
class _Listing:
    thread: threading.Thread
    done: threading.Event = field(default_factory=threading.Event)


class ServerBook:
    """The servers of one widget (see the module docstring). Thread-safe.

    ``on_change`` is called (any thread, no lock held) whenever :meth:`rows` would differ.
    """

    def __init__(
        self, remote: RemoteEngine, session: Session, on_change: Callable[[], None]
    ) -> None:
        self._remote = remote
        self._session = session
        self._on_change = on_change
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._notices: dict[str, _Notice] = {}
        self._notice_seq = 0
        self._listings: list[_Listing] = []
        self._timers: list[threading.Timer] = []
        self._changed = True
        self._closed = False
        self._unsubscribe = remote.on_notice(self._on_notice)

    # ------------------------------------------------------------------ acting

    def add(
        self,
        base_url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
    ) -> str:
        """Add a server and start listing its models; returns its name.

        Raises the registry's errors (bad URL, name or key arguments; a name taken by
        another URL; an unset key variable) before anything changes.
        """
        server = self._remote.add_server(
            base_url, name=name, api_key=api_key, api_key_env=api_key_env
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("This widget is closed: make a new one to add servers.")
            known = self._entries.get(server.name)
            entry = _Entry(
                server.name,
                server.base_url,
                server.has_api_key,
                models=known.models if known else (),
                generation=(known.generation + 1) if known else 0,
            )
            self._entries[server.name] = entry
        self._start_listing(entry)
        self._mark()
        return server.name

    def refresh(self, name: str) -> None:
        """List a server's models again (after a failed listing, or to pick up new ones)."""
        with self._lock:
            entry = self._entry(name)
            entry = replace(
                entry,
                status="listing",
                error=None,
                action=None,
                can_retry=False,
                generation=entry.generation + 1,
            )
            self._entries[name] = entry
        self._start_listing(entry)
        self._mark()

    def remove(self, name: str) -> tuple[str, ...]:
        """Forget a server: its models leave the selector (a Ready one is evicted, as a
        local model would be). Returns the model keys that were removed."""
        with self._lock:
            entry = self._entry(name)
            del self._entries[name]
            self._notices.pop(name, None)
        if name in self._remote.servers:
            self._remote.remove_server(name)
        keys = tuple(
            spec.repo_id
            for spec in self._session.catalog
            if (split_remote_key(spec.repo_id) or ("", ""))[0] == name
        )
        self._session.remove_models(keys)
        self._mark()
        log.info("removed server %s (%d models)", entry.name, len(keys))
        return keys

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def models(self, name: str) -> tuple[str, ...]:
        """The keys of the models server ``name`` listed (empty while it lists)."""
        with self._lock:
            return self._entry(name).models

    def status(self, name: str) -> ServerStatus:
        with self._lock:
            return self._entry(name).status

    # ------------------------------------------------------------------ reading

    def changed(self) -> bool:
        """Whether :meth:`rows` changed since the last :meth:`take_changes` (a peek)."""
        with self._lock:
            return self._changed

    def take_changes(self) -> bool:
        """Whether :meth:`rows` changed since the last call."""
        with self._lock:
            changed, self._changed = self._changed, False
            return changed

    def rows(self) -> list[ServerRow]:
        """The trait ``servers``: name, URL, status, models and the wait in progress."""
        with self._lock:
            entries = list(self._entries.values())
            notices = dict(self._notices)
        now = time.monotonic()
        rows: list[ServerRow] = []
        for e in entries:
            held = notices.get(e.name)
            rows.append(
                {
                    "name": e.name,
                    "base_url": e.base_url,
                    "status": e.status,
                    "error": e.error,
                    "action": e.action,
                    "can_retry": e.can_retry,
                    "has_api_key": e.has_api_key,
                    "models": list(e.models),
                    "notice": self._notice_row(held, now) if held else None,
                }
            )
        return rows

    def wait_until_listed(self, timeout: float | None = 60.0) -> bool:
        """Wait until no listing is in flight."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [item for item in self._listings if not item.done.is_set()]
            if not pending:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            pending[0].done.wait(left)

    def close(self) -> None:
        """Stop listening to notices and timers; wait briefly for listings in flight."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            timers, self._timers = self._timers, []
            listings = list(self._listings)
        self._unsubscribe()
        for timer in timers:
            timer.cancel()
        for item in listings:
            item.thread.join(CLOSE_WAIT_S)

    # ------------------------------------------------------------------ internals

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            names = ", ".join(self._entries) or "none"
            raise LookupError(
                f"This widget has no server named {name!r} (servers: {names}): add it with "
                "add_server(base_url, name=...) first."
            )
        return entry

    def _mark(self) -> None:
        with self._lock:
            self._changed = True
        self._on_change()

    def _start_listing(self, entry: _Entry) -> None:
        listing = _Listing(
            threading.Thread(
                target=self._list, args=(entry,), name="chatwidget-server-list", daemon=True
            )
        )
        with self._lock:
            self._listings = [item for item in self._listings if not item.done.is_set()]
            self._listings.append(listing)
        listing.thread.start()

    def _list(self, entry: _Entry) -> None:
        """List the server's models (helper thread) and add them to the session's catalog."""
        try:
            try:
                specs = self._remote.model_specs(entry.name)
            except Exception as exc:
                failure = failure_of(exc)
                self._finish(
                    entry,
                    status="failed",
                    error=str(exc),
                    action=failure.action,
                    can_retry=True,
                )
                return
            with self._lock:
                current = self._entries.get(entry.name)
                stale = self._closed or current is None or current.generation != entry.generation
            if not stale:
                self._session.add_remote_models(specs)
            self._finish(entry, status="ready", models=tuple(s.repo_id for s in specs))
        finally:
            with self._lock:
                for item in self._listings:
                    if item.thread is threading.current_thread():
                        item.done.set()

    def _finish(self, entry: _Entry, **changes: object) -> None:
        with self._lock:
            current = self._entries.get(entry.name)
            if current is None or current.generation != entry.generation:
                return  # removed, or listed again since: the newer listing wins
            self._entries[entry.name] = replace(current, **changes)  # type: ignore[arg-type]
            self._notices.pop(entry.name, None)
        self._mark()

    def _on_notice(self, notice: RemoteNotice) -> None:
        """A wait began (engine thread): show it while it lasts, if it is about our server."""
        server = notice.model.split(":", 1)[0]
        with self._lock:
            if self._closed or server not in self._entries:
                return
            self._notice_seq += 1
            self._notices[server] = _Notice(
                self._notice_seq, notice, time.monotonic() + notice.retry_in_s
            )
            timer = threading.Timer(notice.retry_in_s + 0.05, self._mark)
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()
        self._mark()

    def _notice_row(self, held: _Notice, now: float) -> RemoteNoticeRow | None:
        """The notice, while its wait lasts and what waits is still going on."""
        n = held.notice
        if now >= held.until:
            return None
        if n.phase == "connecting" and self._session.model_state(n.model) is not (
            ModelState.CONNECTING
        ):
            return None
        if n.phase == "reply" and not self._session.generating:
            return None
        return {
            "seq": held.seq,
            "model": n.model,
            "phase": n.phase,
            "message": n.message,
            "retry_in_s": round(max(0.0, held.until - now), 2),
        }
