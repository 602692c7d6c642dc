"""SQLiteStore: the history file (stdlib ``sqlite3``, WAL, busy timeout, foreign keys on).

One writer thread per store ("chatwidget-history-writer") owns the write connection. Callers
never wait for the disk:

- ``submit(change)`` queues a change; the writer commits what is queued in one
  ``BEGIN IMMEDIATE`` transaction (so each change is all or nothing, in submission order)
  and takes the next batch. With WAL and ``synchronous=NORMAL`` a commit survives a killed
  process; only an OS crash may lose the last commits. A change that ``can_wait`` (a reply
  starting, still empty) is held back up to :data:`CAN_WAIT_S` while nothing else is
  queued: a short reply's start and end then go in one commit, and a long one's start is
  written while the model works, not while the reply's prompt is being built.
- ``schedule(key, due, producer)`` is for streaming checkpoints: at ``due`` the writer calls
  ``producer()`` (which reads the reply's text so far) and commits what it returns.
- Reads (``load_workspace``, ``list_*``) open their own short-lived connection on the
  caller's thread. WAL readers do not wait for writers.

Bad states never stop the chat and never lose what is saved:

- a lock held past the busy timeout, a read-only file or folder, a full disk or another I/O
  error: the store sets :attr:`warning`, keeps the changes queued (in memory), retries with
  a back-off (0.5 s doubling to 10 s, or at once on :meth:`retry_now`) and clears the
  warning when they are saved. A read-only file is still read (``mode=ro``, or
  ``immutable=1`` on read-only media), so its conversations are restored.
- a corrupt file (``SQLITE_CORRUPT``/``SQLITE_NOTADB``, at open or later) is moved aside to
  ``<name>.corrupt-<time>`` (with its ``-wal``/``-shm``), never deleted; a new file is
  started and rewritten from the owner's snapshot; a notice names where the old one went.
- a file written by a newer chatwidget, or an SQLite file that is not a chatwidget
  history, is left untouched: the store keeps changes in memory only and says so.

Two processes can use one file at once: WAL lets them read while the other writes,
``BEGIN IMMEDIATE`` takes the write lock up front (no deadlocking lock upgrades), and the
busy timeout makes each wait for the other's short commits. A change that fails a
constraint because another process deleted its conversation is dropped with a notice.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from chatwidget.history import sql
from chatwidget.history.changes import Change, ConversationRecord, ConversationRow, WorkspaceData
from chatwidget.history.faults import (
    NewerSchemaError,
    classify,
    is_corrupt,
    move_aside,
    read_only_fs,
    warning_message,
)
from chatwidget.history.schema import SCHEMA_VERSION, ForeignDatabaseError, file_version, migrate
from chatwidget.history.store import Listener, Producer, Store
from chatwidget.history.types import Comparison, StoreWarning, WarningKind, WorkspaceInfo

log = logging.getLogger("chatwidget.history")

_T = TypeVar("_T")

#: The longest a change that ``can_wait`` waits for company before it is committed: a
#: streaming checkpoint's interval (the text a kill may lose), so a reply's start goes in
#: with its first checkpoint, or with its end when it is shorter.
CAN_WAIT_S = 1.0


class SQLiteStore(Store):
    """The history file. See the module docstring for what it guarantees.

    Args:
        path: the SQLite file; created (with its folder) if missing.
        busy_timeout: seconds a write waits for another process's lock before the store
            reports ``locked`` and retries later.
        retry_min, retry_max: the back-off between retries of failed writes, in seconds.
        listener: called with no arguments, on the writer thread, when ``warning`` or
            ``notices`` change.
        start: start the writer thread now. Without it, :meth:`run_once` commits what is
            pending on the caller's thread (for tests that drive the store step by step).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        retry_min: float = 0.5,
        retry_max: float = 10.0,
        listener: Listener | None = None,
        start: bool = True,
    ) -> None:
        super().__init__()
        self._path = Path(path).expanduser().absolute()
        self._busy_timeout = busy_timeout
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._listener = listener

        self._cond = threading.Condition()  # guards everything below except the connection
        self._queue: deque[tuple[int, Change]] = deque()
        self._hold_until: float | None = None  # the queue holds only changes that can wait
        # when the waiting writer wakes by itself (inf: never; 0: it is awake and will look
        # at the queue and timers before it waits): a change due later needs no notify
        self._wake_at = 0.0
        self._timers: dict[str, tuple[float, Producer]] = {}
        self._submitted = 0
        self._warning: StoreWarning | None = None
        self._notices: list[StoreWarning] = []
        self._frozen: StoreWarning | None = None  # newer schema / foreign file: never write
        self._next_retry = 0.0
        self._backoff = retry_min
        self._flush_requests = 0
        self._flush_done = 0
        self._flush_failed = 0
        self._stopping = False
        self._closed = False
        self.stats = {"commits": 0, "changes": 0, "failures": 0, "dropped": 0}
        self.max_commit_s = 0.0

        self._db_lock = threading.RLock()  # guards the write connection and moving the file
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

        self._open()
        if start:
            self.start()
        self._at_exit = functools.partial(_flush_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    # ---------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        return self._path

    @property
    def submitted(self) -> int:
        return self._submitted

    @property
    def warning(self) -> StoreWarning | None:
        with self._cond:
            w = self._frozen or self._warning
            return replace(w, pending_writes=self._pending()) if w is not None else None

    @property
    def notices(self) -> tuple[StoreWarning, ...]:
        with self._cond:
            return tuple(self._notices)

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="chatwidget-history-writer", daemon=True
            )
            self._thread.start()

    # ---------------------------------------------------------------- writes

    def submit(self, change: Change) -> None:
        with self._cond:
            if self._closed:
                log.debug("History change %r after close: not saved", change.what)
                return
            self._submitted += 1
            if self._frozen is not None:
                return  # this file is never written this session (see ``warning``)
            now = time.monotonic()
            if not change.can_wait:
                self._hold_until = None
            elif not self._queue:
                self._hold_until = now + CAN_WAIT_S
            self._queue.append((self._submitted, change))
            self._wake_by(now if self._hold_until is None else self._hold_until)

    def schedule(self, key: str, due: float, producer: Producer) -> None:
        with self._cond:
            if self._frozen is not None or self._closed:
                return
            self._timers[key] = (due, producer)
            self._wake_by(due)

    def _wake_by(self, due: float) -> None:
        """Make sure the writer looks again by ``due`` (caller holds ``_cond``): a writer
        that is awake, or that wakes earlier anyway, is left alone (no thread switch while a
        reply streams)."""
        if due < self._wake_at:
            self._cond.notify_all()

    def cancel(self, key: str) -> None:
        with self._cond:
            self._timers.pop(key, None)

    def retry_now(self) -> None:
        with self._cond:
            self._next_retry = 0.0
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Commit what is pending, scheduled checkpoints included; True when all is saved.

        While a :attr:`warning` stands it returns False at once: retries go on in the
        background (:meth:`retry_now` retries early), so a flush never waits on a bad file.
        It also returns False if the attempt it asks for fails, or when ``timeout`` passes.
        Without a writer thread it commits on this thread.
        """
        return self._flush(timeout, despite_warning=False)

    def _flush(self, timeout: float | None, *, despite_warning: bool) -> bool:
        if self._thread is None:
            self.run_once(force=True)
            with self._cond:
                return not self._pending() and self._frozen is None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if not self._pending():
                return self._frozen is None
            if self._frozen is not None or (self._warning is not None and not despite_warning):
                return False
            self._flush_requests += 1
            mine = self._flush_requests
            target = self._submitted
            self._cond.notify_all()
            while True:
                if self._flush_done >= mine and not (self._queue and self._queue[0][0] <= target):
                    return True
                if self._flush_failed >= mine or self._closed:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)

    def close(self, timeout: float = 10.0) -> None:
        """Save what is pending (one last attempt even while a warning stands, up to
        ``timeout``), stop the writer and close the file. Idempotent."""
        with self._cond:
            if self._closed:
                return
        saved = self._flush(timeout, despite_warning=True)
        with self._cond:
            self._stopping = True
            self._closed = True
            pending = self._pending()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        atexit.unregister(self._at_exit)
        if not saved and pending:
            log.warning(
                "Closed %s with %d change(s) not saved: %s",
                self._path,
                pending,
                (self._frozen or self._warning or _unknown()).message,
            )

    def run_once(self, *, force: bool = False) -> bool:
        """Commit what is due now on this thread; True if something was attempted."""
        with self._cond:
            work = self._take(force=force)
        if work is None:
            return False
        self._write(*work)
        return True

    # ---------------------------------------------------------------- reads

    def load_workspace(self, workspace: str) -> WorkspaceData:
        return self._read(
            lambda conn, version: sql.read_workspace(conn, version, workspace),
            WorkspaceData([], {}, []),
        )

    def load_conversation(self, conversation_id: str) -> ConversationRecord | None:
        return self._read(lambda conn, _: sql.read_conversation(conn, conversation_id), None)

    def list_workspaces(self) -> list[WorkspaceInfo]:
        return self._read(lambda conn, _: sql.read_workspaces(conn), [])

    def list_conversations(self, workspace: str) -> list[tuple[ConversationRow, int]]:
        return self._read(lambda conn, _: sql.read_conversations(conn, workspace), [])

    def list_comparisons(self, workspace: str) -> list[Comparison]:
        return self._read(
            lambda conn, version: sql.read_comparisons(
                conn, version, "workspace = ?", (workspace,)
            ),
            [],
        )

    def _read(self, fn: Callable[[sqlite3.Connection, int], _T], empty: _T) -> _T:
        """Run ``fn(conn, schema version)`` on a fresh read connection.

        Returns ``empty`` when there is no file yet or no chatwidget tables; when the file is
        corrupt (it is moved aside, see the module docstring); and when it cannot be read
        at all (with a notice: what it holds is not shown, but nothing is overwritten).
        """
        conn = None
        try:
            conn = self._read_connection()
            if conn is None:
                return empty
            try:
                version = file_version(conn)
            except ForeignDatabaseError:
                return empty
            if version == 0:
                return empty
            return fn(conn, version)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
                conn = None
            if is_corrupt(exc):
                with self._db_lock:
                    self._recover(exc)
            else:
                self._notice(
                    "unavailable",
                    f"The history file {self._path} could not be read ({exc}); the "
                    "conversations saved there are not shown. Nothing in it was changed.",
                )
            return empty
        finally:
            if conn is not None:
                conn.close()

    def _read_connection(self) -> sqlite3.Connection | None:
        if not self._path.exists():
            return None
        attempts = [None, f"{self._path.as_uri()}?mode=ro"]
        if read_only_fs(self._path.parent):
            attempts.append(f"{self._path.as_uri()}?mode=ro&immutable=1")
        error: sqlite3.Error | None = None
        for uri in attempts:
            conn = None
            try:
                conn = self._connect(uri)
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError as exc:  # cannot open this way: try the next
                error = exc
                if conn is not None:
                    conn.close()
        assert error is not None
        raise error

    # ---------------------------------------------------------------- opening

    def _open(self) -> None:
        """Prepare the file for writing now; report (and retry later) what stops it."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._failed(exc)
            return
        with self._db_lock:
            try:
                self._ensure_writable()
            except sqlite3.DatabaseError as exc:
                if is_corrupt(exc):
                    self._recover(exc)
                else:
                    self._failed(exc)
            except OSError as exc:
                self._failed(exc)

    def _connect(self, uri: str | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(
            uri or str(self._path),
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=uri is not None,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_writable(self) -> sqlite3.Connection:
        """The write connection, opened and migrated if needed (caller holds ``_db_lock``)."""
        if self._conn is not None:
            return self._conn
        if self._frozen is not None:
            raise sqlite3.OperationalError("the history file is not written this session")
        conn = self._connect()
        try:
            # Look before touching anything: a newer or foreign file is left as it is.
            version = file_version(conn)
            if version > SCHEMA_VERSION:
                raise NewerSchemaError(version)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
            before, after = migrate(conn)
            if before > after:
                raise NewerSchemaError(before)
            if before < after and before > 0:
                log.info("Migrated %s from schema %d to %d", self._path, before, after)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    # ---------------------------------------------------------------- the writer

    def _run(self) -> None:
        while True:
            with self._cond:
                work = self._wait_for_work()
            if work is None:
                return
            try:
                self._write(*work)
            except Exception:  # a bug: keep the thread alive, show it, retry later
                log.exception("The history writer failed")
                with self._cond:
                    self._next_retry = time.monotonic() + self._retry_max

    def _wait_for_work(self) -> tuple[list[tuple[int, Change]], list[Any], int] | None:
        while True:
            if self._stopping:
                return None
            work = self._take(
                force=self._flush_requests > max(self._flush_done, self._flush_failed)
            )
            if work is not None:
                return work
            sleep = self._sleep_time()
            self._wake_at = math.inf if sleep is None else time.monotonic() + sleep
            try:
                self._cond.wait(sleep)
            finally:
                self._wake_at = 0.0

    def _take(self, *, force: bool) -> tuple[list[tuple[int, Change]], list[Any], int] | None:
        """The batch to write now, or None (caller holds ``_cond``)."""
        if self._frozen is not None:
            return None
        now = time.monotonic()
        if not force and now < self._next_retry:
            return None
        due = [k for k, (t, _) in self._timers.items() if force or t <= now]
        held = not force and self._hold_until is not None and now < self._hold_until
        if (not self._queue or held) and not due:
            if force:
                self._flush_done = self._flush_requests
                self._cond.notify_all()
            return None
        fired = [(k, self._timers.pop(k)) for k in due]
        return list(self._queue), fired, self._flush_requests

    def _sleep_time(self) -> float | None:
        if self._frozen is not None or not (self._queue or self._timers):
            return None
        now = time.monotonic()
        if now < self._next_retry:
            return self._next_retry - now
        times = [t for t, _ in self._timers.values()]
        if self._queue:
            times.append(now if self._hold_until is None else self._hold_until)
        return max(0.0, min(times) - now)

    def _write(self, batch: list[tuple[int, Change]], fired: list[Any], flush_request: int) -> None:
        produced: list[tuple[str, float, Producer, Change]] = []
        for key, (due, producer) in fired:
            try:
                change = producer()
            except Exception:
                log.exception("A history checkpoint failed to build")
                continue
            if change is not None:
                produced.append((key, due, producer, change))
        changes = [c for _, c in batch] + [p[3] for p in produced]
        error: BaseException | None = None
        had_warning = False
        done_through = 0
        started = time.monotonic()
        with self._db_lock:
            try:
                self._commit(changes)
                done_through = batch[-1][0] if batch else 0
            except sqlite3.IntegrityError:
                done_through, error = self._commit_one_by_one(batch, [p[3] for p in produced])
            except sqlite3.DatabaseError as exc:
                if is_corrupt(exc):
                    done_through = self._recover(exc)
                else:
                    error = exc
            except OSError as exc:
                error = exc
        took = time.monotonic() - started
        with self._cond:
            self._drop_through(done_through)
            if error is None:
                self.stats["commits"] += 1
                self.stats["changes"] += len(changes)
                self.max_commit_s = max(self.max_commit_s, took)
                self._backoff = self._retry_min
                self._next_retry = 0.0
                self._flush_done = max(self._flush_done, flush_request)
                had_warning = self._warning is not None
                self._warning = None
                self._cond.notify_all()
            else:
                for key, due, producer, _ in produced:
                    self._timers.setdefault(key, (due, producer))
        if error is None:
            if had_warning:
                log.info("History writes to %s work again", self._path)
                self._notify()
        else:
            self._failed(error, flush_request=flush_request)

    def _commit(self, changes: Iterable[Change]) -> None:
        conn = self._ensure_writable()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                for op in change.ops:
                    sql.apply(conn, op)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _commit_one_by_one(
        self, batch: list[tuple[int, Change]], produced: list[Change]
    ) -> tuple[int, BaseException | None]:
        """Commit changes singly, dropping those that fail a constraint (their conversation
        was deleted by another process). Returns the last seq handled and any other error."""
        done = 0
        items: list[tuple[int, Change]] = [*batch, *((0, c) for c in produced)]
        for seq, change in items:
            try:
                self._commit([change])
            except sqlite3.IntegrityError as exc:
                self._drop(change, exc)
            except (sqlite3.Error, OSError) as exc:
                return done, exc
            done = max(done, seq)
        return done, None

    def _drop(self, change: Change, exc: BaseException) -> None:
        with self._cond:
            self.stats["dropped"] += 1
        self._notice(
            "unavailable",
            f"A change ({change.what}) could not be saved in {self._path}: {exc}. Its "
            "conversation was probably deleted in another window.",
        )

    def _notice(self, kind: WarningKind, message: str, moved_to: str | None = None) -> None:
        log.warning("History: %s", message)
        with self._cond:
            self._notices.append(
                StoreWarning(kind=kind, message=message, path=str(self._path), moved_to=moved_to)
            )
        self._notify()

    def _drop_through(self, seq: int) -> None:
        while self._queue and self._queue[0][0] <= seq:
            self._queue.popleft()
        if not self._queue:
            self._hold_until = None

    def _pending(self) -> int:
        return len(self._queue) + len(self._timers)

    # ---------------------------------------------------------------- failures

    def _failed(self, exc: BaseException, *, flush_request: int | None = None) -> None:
        """Record a failed write (or open): set the warning, schedule a retry."""
        kind, detail = classify(exc, self._path)
        warning = StoreWarning(
            kind=kind,
            message=warning_message(kind, detail, self._path, self._busy_timeout),
            path=str(self._path),
        )
        with self._cond:
            if kind in ("newer_schema", "foreign"):
                self._frozen = warning
                self._notices.append(warning)
                changed = True
            else:
                changed = self._warning is None or self._warning.kind != kind
                self._warning = warning
                self._next_retry = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self._retry_max)
            self.stats["failures"] += 1
            if flush_request is not None:
                self._flush_failed = max(self._flush_failed, flush_request)
            self._cond.notify_all()
        if changed:
            log.warning("History: %s", (self._frozen or self._warning or _unknown()).message)
            self._notify()

    def _recover(self, exc: BaseException) -> int:
        """Move a corrupt file aside, start a new one, rewrite it from the owner's snapshot.

        Returns the seq through which queued changes are contained in the snapshot (0 when
        there is no snapshot source). Caller holds ``_db_lock``.
        """
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        try:
            moved_to = move_aside(self._path)
        except OSError as move_error:
            self._failed(move_error)
            return 0
        self._notice(
            "corrupt",
            f"The history file {self._path} was damaged ({exc}). It was moved to {moved_to} "
            "and a new history file was started.",
            moved_to=str(moved_to),
        )
        through = 0
        try:
            self._ensure_writable()
            source = self._snapshot_source
            if source is not None:
                changes, through = source()
                self._commit(changes)
        except (sqlite3.Error, OSError) as error:
            self._failed(error)
            return 0
        return through


def _flush_at_exit(ref: weakref.ReferenceType[SQLiteStore]) -> None:
    store = ref()
    if store is not None:
        with suppress(Exception):
            store.flush(2.0)


def _unknown() -> StoreWarning:
    return StoreWarning(kind="unavailable", message="unknown", path="")
