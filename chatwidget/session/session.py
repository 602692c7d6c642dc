"""The session: one user's conversations with their model intent, replies and settings.

A :class:`Session` is everything :class:`~chatwidget.ChatWidget` does except the widget
part: it has no traitlets and sends nothing to a browser. It turns Python API calls into
orchestrator intents, runs replies on a thread, keeps the settings and the failures to show,
and records *what changed* as a set of parts (:data:`PARTS`) that a reader, such as the
widget's publisher, collects with :meth:`Session.take_changes` and renders.

- Conversations are read and written only through a
  :class:`~chatwidget.session.store.ConversationStore`: a
  :class:`~chatwidget.session.history_store.HistoryStore` over :attr:`Session.history` (an
  SQLite file, or memory), so every change is saved atomically and Regenerate / Edit keep
  the earlier versions as branches.
- Streamed text goes only through :attr:`Session.deltas`, a
  :class:`~chatwidget.session.deltas.DeltaStream`; per token that costs a list append, and
  nothing else is touched until the reply ends.
- The stale-completion guard stays in the orchestrator: the session only asks for models.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from chatwidget.catalog import (
    DEFAULT_CATALOG,
    REMOTE_SEPARATOR,
    ModelSpec,
    validate_model_key,
    validate_repo_id,
)
from chatwidget.engine.types import CheckedChat, GenerationSettings
from chatwidget.errors import ChatWidgetError, NoActiveModelError
from chatwidget.history import History
from chatwidget.history.types import ConversationInfo as StoredConversation
from chatwidget.history.types import Versions, WorkspaceInfo
from chatwidget.orchestrator import (
    PHASE_LOADING,
    ErrorReported,
    Event,
    Evicted,
    ModelState,
    OrchestratorSnapshot,
    ProgressChanged,
    StateChanged,
    Switched,
    UnloadResult,
)
from chatwidget.orchestrator.lifecycle import IN_FLIGHT
from chatwidget.orchestrator.orchestrator import same_load
from chatwidget.session import persistence
from chatwidget.session.deltas import DeltaStream
from chatwidget.session.history_store import HistoryStore
from chatwidget.session.messages import ConversationInfo, Message, new_id
from chatwidget.session.reply import ReplyHandle
from chatwidget.session.reply_worker import ReplyWorker
from chatwidget.session.settings import settings_from

if TYPE_CHECKING:
    from chatwidget.runtime import Runtime

log = logging.getLogger("chatwidget.session")

Part = Literal[
    "models",  # the catalog and each model's state
    "downloads",  # the download manager's rows (progress too)
    "conversations",  # the conversation list: ids, titles, models
    "transcript",  # the active conversation's messages (at turn boundaries)
    "settings",
    "errors",
    "switch",  # the latest auto-switch notice
    "focus",  # the download manager was asked to open
    "activity",  # a reply or a download/load started or ended
    "storage",  # the history file's state (a warning, a file moved aside)
]
PARTS: tuple[Part, ...] = (
    "models",
    "downloads",
    "conversations",
    "transcript",
    "settings",
    "errors",
    "switch",
    "focus",
    "activity",
    "storage",
)
#: Failures kept for the UI.
MAX_ERRORS = 20


class Notice(NamedTuple):
    """A failure shown to the user; ``seq`` grows by one per notice."""

    seq: int
    message: str


class SwitchNotice(NamedTuple):
    """The latest auto-switch: conversation ``conversation_id`` now chats with ``repo_id``."""

    seq: int
    conversation_id: str
    repo_id: str


class Window(NamedTuple):
    """Messages ``start`` to ``total`` of a conversation, for a reader that pages."""

    conversation_id: str
    epoch: int  # changes when messages before the end change in place (readers refetch)
    start: int
    total: int
    messages: list[Message]


class Session:
    """Conversations, their intent, replies and settings, on a shared runtime.

    ``on_change`` is called (from any thread, without locks held) whenever a part changed
    or streamed text is waiting in :attr:`deltas`; keep it cheap (the widget pokes its
    publisher). ``history`` is where conversations are kept (default: in memory only);
    its conversations are restored, each with its requested model, and its settings.
    ``group`` names this session to the orchestrator (its conversations, and whose token
    its downloads use).
    """

    def __init__(
        self,
        runtime: Runtime,
        models: Iterable[ModelSpec | str] | None = None,
        *,
        history: History | None = None,
        group: str | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._closed = False
        self._runtime = runtime
        self._orch = runtime.orchestrator
        self._group = group if group is not None else new_id("w")
        self._on_change = on_change
        self._changes: set[Part] = set(PARTS)
        self._history = history if history is not None else History.open(False)
        self._store = HistoryStore(self._history)
        self._epochs: dict[str, int] = {}
        self._catalog: dict[str, ModelSpec] = {}
        self._download_order: list[str] = []
        self._settings = GenerationSettings()
        self._errors: collections.deque[Notice] = collections.deque(maxlen=MAX_ERRORS)
        self._error_seq = 0
        self._switch: SwitchNotice | None = None
        self._switch_seq = 0
        self._focus_seq = 0
        self._reply: ReplyHandle | None = None
        self._replies = ReplyWorker()
        self._subscriptions: list[Callable[[], None]] = []
        self._freed: dict[str, int] = {}  # repo id -> bytes its last unload freed
        self._loading: str | None = None  # the reply whose asleep model loads again
        self.deltas = DeltaStream(self._notify)
        #: Called on the reply thread before a local model's reply starts, to wait (briefly)
        #: until the turn's start is published: the widget sets its publisher's ``flush``.
        #: Publishing and encoding the prompt then take turns instead of fighting over the
        #: interpreter. A remote model's request goes out at once: the server's time to
        #: first token covers the publishing.
        self.settle: Callable[[], object] | None = None

        for spec in models if models is not None else DEFAULT_CATALOG:
            self._add_spec(self._coerce(spec))
        self._settings = persistence.saved_settings(self._history)
        self._active = self._restore()
        self._unsubscribe = self._orch.subscribe(self._on_event)

    def _restore(self) -> str:
        """Open the history's conversations (or a first one); returns the active id."""
        infos = self._store.infos()
        if not infos:
            infos = [self._store.create()]
        for conv in infos:
            self._orch.open_conversation(conv.id, group=self._group)
        saved = self._history.active_conversation_id
        active = saved if saved in self._store.ids() else infos[-1].id
        self._orch.set_active_conversation(active, group=self._group)
        self._request_saved_model(active)
        return active

    def _request_saved_model(self, cid: str) -> None:
        """Ask again for the model a restored conversation last asked for (once)."""
        model = self._store.info(cid).model
        if model is None or self._orch.requested_model(cid) is not None:
            return
        try:
            spec = self._add_spec(self._coerce(model))
            if self._orch.request_model(cid, spec) is not ModelState.READY:
                with self._lock:
                    if spec.repo_id not in self._download_order:
                        self._download_order.append(spec.repo_id)
        except (ChatWidgetError, ValueError) as exc:  # a model this kernel cannot offer
            log.info("Model %s of conversation %s not requested again: %s", model, cid, exc)

    # ------------------------------------------------------------------ reading

    @property
    def conversation_id(self) -> str:
        """The id of the active conversation."""
        return self._active

    @property
    def active_model(self) -> str | None:
        """The model that answers the next message in the active conversation."""
        return self._orch.active_model(self._active)

    @property
    def requested_model(self) -> str | None:
        """The latest model asked for in the active conversation (may still be on its way)."""
        return self._orch.requested_model(self._active)

    @property
    def settings(self) -> GenerationSettings:
        return self._settings

    @property
    def store(self) -> HistoryStore:
        """Where the conversations live (read it; change them through the session)."""
        return self._store

    @property
    def history(self) -> History:
        """The history the conversations are kept in (``history.path`` is None in memory).
        Other features (comparisons) may save through it."""
        return self._history

    @property
    def catalog(self) -> list[ModelSpec]:
        """The models offered, in the order they were added."""
        with self._lock:
            return list(self._catalog.values())

    def knows(self, repo_id: str) -> bool:
        """Whether ``repo_id`` is in the catalog."""
        with self._lock:
            return repo_id in self._catalog

    @property
    def download_order(self) -> list[str]:
        """Models that went through the queue, in the order they were first queued."""
        with self._lock:
            return list(self._download_order)

    @property
    def errors(self) -> list[Notice]:
        with self._lock:
            return list(self._errors)

    @property
    def last_switch(self) -> SwitchNotice | None:
        return self._switch

    @property
    def focus_seq(self) -> int:
        """Grows by one each time the download manager should open (a model was queued)."""
        return self._focus_seq

    @property
    def generating(self) -> bool:
        """Whether a reply is being generated."""
        reply = self._reply
        return reply is not None and not reply.done

    @property
    def reply(self) -> ReplyHandle | None:
        """The latest reply (running or finished), or None before the first."""
        return self._reply

    def busy(self, snapshot: OrchestratorSnapshot | None = None) -> bool:
        """Whether work is in flight: a reply, or a download or load of one of our models."""
        if self.generating:
            return True
        snapshot = snapshot or self._orch.snapshot()
        with self._lock:
            mine = set(self._catalog) | set(self._download_order)
        return any(
            status.state in IN_FLIGHT
            for repo_id, status in snapshot.models.items()
            if repo_id in mine
        )

    def snapshot(self) -> OrchestratorSnapshot:
        """The orchestrator's state now (models, conversations, queue)."""
        return self._orch.snapshot()

    def model_state(self, repo_id: str) -> ModelState:
        status = self._orch.snapshot().models.get(repo_id)
        return status.state if status else ModelState.NOT_DOWNLOADED

    def conversations(self) -> list[ConversationInfo]:
        return self._store.infos()

    def messages(self, conversation_id: str | None = None) -> list[Message]:
        """Every message of a conversation (the active one by default)."""
        return self._store.messages(conversation_id or self._active)

    def epoch(self, conversation_id: str) -> int:
        with self._lock:
            return self._epochs.get(conversation_id, 0)

    def window(self, page: int, conversation_id: str | None = None) -> Window:
        """The last, partly filled page of ``page`` messages of a conversation (the active
        one by default): messages ``start`` to the end, where ``start`` is a multiple of
        ``page``. Earlier pages only change when the epoch does."""
        cid = conversation_id or self._active
        total = self._store.info(cid).count
        start = ((total - 1) // page) * page if total else 0
        return Window(cid, self.epoch(cid), start, total, self._store.messages(cid, start))

    def page(self, conversation_id: str, before: int, limit: int) -> tuple[int, list[Message]]:
        """Up to ``limit`` messages before index ``before``: (index of the first, messages)."""
        start = max(0, before - limit)
        return start, self._store.messages(conversation_id, start, max(start, before))

    def urgent_changes(self) -> bool:
        """Whether a change waiting is more than download progress (which may be coalesced)."""
        with self._lock:
            return bool(self._changes - {"downloads"})

    def take_changes(self) -> set[Part]:
        """The parts changed since the last call (all of them at first)."""
        with self._lock:
            changes, self._changes = self._changes, set()
            return changes

    # ------------------------------------------------------------------ models

    def select_model(self, model: ModelSpec | str) -> ModelState:
        """Pick a model for the active conversation; returns its state.

        A Ready model answers the next message. Any other model is queued (downloaded if
        needed, then loaded) and the download manager is asked to open.
        """
        spec = self._add_spec(self._coerce(model))
        state = self._orch.request_model(self._active, spec)
        self._history.set_model(self._active, spec.repo_id)
        if state is not ModelState.READY:
            with self._lock:
                if spec.repo_id in self._download_order:
                    self._download_order.remove(spec.repo_id)
                self._download_order.append(spec.repo_id)
                self._focus_seq += 1
            self._changed("downloads", "focus", "activity")
        self._changed("conversations", "models")
        return state

    def add_model(
        self, model: ModelSpec | str, *, check: bool = True, wait: bool = True
    ) -> ModelSpec:
        """Add a model to the catalog without selecting it.

        With ``check`` the hub is asked about it (with this session's token): with ``wait``
        in the caller's thread, raising a clear error for an unknown or gated repo (nothing
        is added); without, on a background thread, returning at once: a model the hub does
        not know leaves the catalog again and the reason is shown (part ``errors``); a
        gated one stays, for a token to unlock it. The front end never waits for the hub.
        """
        spec = ModelSpec.coerce(model)
        if check and wait and not spec.is_remote:
            self._runtime.plan(spec, group=self._group)  # raises for unknown/gated repos
        spec = self._add_spec(spec)
        self._changed("models")
        if check and not wait and not spec.is_remote:
            threading.Thread(
                target=self._check_model, args=(spec,), name="chatwidget-add-model", daemon=True
            ).start()
        return spec

    def track_download(self, repo_id: str) -> None:
        """Show a model queued by other work of this session (a comparison) in the download
        manager, without selecting it or opening the manager."""
        with self._lock:
            if repo_id in self._download_order:
                return
            self._download_order.append(repo_id)
        self._changed("downloads", "activity")

    def _check_model(self, spec: ModelSpec) -> None:
        try:
            self._runtime.plan(spec, group=self._group)
        except Exception as exc:
            if getattr(exc, "kind", None) != "gated":
                with self._lock:
                    if self._catalog.get(spec.repo_id) is spec:
                        del self._catalog[spec.repo_id]
                self._changed("models")
            self.report(exc)

    # ------------------------------------------------------------------ memory and tokens

    def unload(self, repo_id: str) -> UnloadResult:
        """Unload a loaded model now: it is Downloaded again; the result says what it freed.

        Conversations on it keep it and load it again on their next message. Raises
        ModelBusyError while a reply uses it (stop the reply first).
        """
        result = self._orch.unload(validate_repo_id(repo_id))
        if result.unloaded:
            with self._lock:
                self._freed[repo_id] = result.freed_bytes
            self._changed("models", "downloads", "activity")
        return result

    def free_memory(self, repo_id: str | None = None) -> int:
        """Unload every loaded model no reply is using, then queue ``repo_id`` again (a
        model that failed because it did not fit); returns the bytes freed."""
        snapshot = self._orch.snapshot()
        freed = 0
        for other, status in snapshot.models.items():
            if status.state is ModelState.READY and other != repo_id:
                try:
                    freed += self.unload(other).freed_bytes
                except ChatWidgetError as exc:  # busy: a reply uses it
                    log.info("free_memory kept %s: %s", other, exc)
        if repo_id is not None:
            self.retry_download(repo_id)
        return freed

    def freed_bytes(self, repo_id: str) -> int | None:
        """What the last unload (or eviction) of ``repo_id`` freed; None if never unloaded."""
        with self._lock:
            return self._freed.get(repo_id)

    def set_token(self, token: str | bool | None) -> tuple[str, ...]:
        """Use ``token`` for this session's downloads only; models that failed for want of
        one are queued again (returned). The token is kept by the downloader alone."""
        if isinstance(token, str) and not token.strip():
            raise ValueError("The token is empty: paste a Hugging Face token (hf_...).")
        retried = self._runtime.set_token(self._group, token)
        with self._lock:
            for repo_id in retried:
                if repo_id not in self._download_order:
                    self._download_order.append(repo_id)
        self._changed("models", "downloads", "activity")
        return retried

    def set_precision(self, repo_id: str, spec: ModelSpec) -> ModelSpec:
        """Load ``repo_id`` as ``spec`` (its dtype and quantization) from now on.

        A loaded model in another precision is unloaded first (it loads again in the new
        one on the next message); raises ModelBusyError while a reply uses it.
        """
        with self._lock:
            known = self._catalog.get(repo_id)
        if known == spec:
            return spec
        if self._orch.snapshot().state(repo_id) is ModelState.READY:
            self.unload(repo_id)
        self._orch.register(spec)  # SpecConflictError while it downloads or compiles
        with self._lock:
            self._catalog[repo_id] = spec
        self._changed("models")
        return spec

    @property
    def loading_message(self) -> str | None:
        """The id of the reply waiting for its (asleep) model to load again, if any."""
        return self._loading

    def add_remote_models(self, specs: Iterable[ModelSpec]) -> None:
        """Add the models a server listed to the catalog (no request is made)."""
        for spec in specs:
            self._add_spec(spec)
        self._changed("models")

    def remove_models(self, repo_ids: Iterable[str]) -> None:
        """Take models out of the catalog (a removed server's); their state is the
        orchestrator's, which evicts a Ready one."""
        with self._lock:
            for repo_id in repo_ids:
                self._catalog.pop(repo_id, None)
                if repo_id in self._download_order:
                    self._download_order.remove(repo_id)
        self._changed("models", "downloads")

    def cancel_download(self, repo_id: str) -> None:
        self._orch.cancel(validate_model_key(repo_id))
        self._changed("models", "downloads", "activity")

    def retry_download(self, repo_id: str) -> None:
        repo_id = validate_model_key(repo_id)
        self._orch.retry(repo_id)
        with self._lock:
            if repo_id not in self._download_order:
                self._download_order.append(repo_id)
        self._changed("models", "downloads", "activity")

    # ------------------------------------------------------------------ replies

    def send(self, text: str) -> ReplyHandle:
        """Send a message in the active conversation; returns a handle to the reply."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Type a message first: it cannot be empty.")
        cid = self._active
        with self._lock:
            self._require_idle()
            self._require_model(cid)
            self._store.append(cid, Message(new_id("m"), "user", text))
            return self._start_reply(cid)

    def regenerate(self) -> ReplyHandle:
        """Generate the last reply of the active conversation again."""
        cid = self._active
        with self._lock:
            self._require_idle()
            self._require_model(cid)
            if self._store.truncate_after_last_user(cid) is None:
                raise ValueError("There is no message to regenerate a reply for.")
            return self._start_reply(cid)

    def stop(self) -> None:
        """Stop the reply being generated, keeping what it has written."""
        reply = self._reply
        if reply is not None:
            reply.stop()

    # ------------------------------------------------------------------ branches

    def edit(self, message_id: str, text: str) -> ReplyHandle:
        """Replace a user message with a new version and reply to it: a new branch from
        there (the old one stays reachable through :meth:`versions`)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Type the new message first: it cannot be empty.")
        with self._lock:
            self._require_idle()
            cid = self._own_message(message_id)
            self._require_model(cid)
            self._store.edit(message_id, text)
            self._show(cid)
            return self._start_reply(cid)

    def versions(self, message_id: str) -> Versions:
        """A message's versions (its siblings, oldest first) and which one is shown."""
        self._own_message(message_id)
        return self._store.versions(message_id)

    def select_version(self, message_id: str, index: int) -> None:
        """Show version ``index`` (from 0) of a message, and the branch below it."""
        with self._lock:
            self._require_idle()
            cid = self._own_message(message_id)
            self._store.select_version(message_id, index)
            self._show(cid)

    def _own_message(self, message_id: str) -> str:
        """The id of the loaded conversation a message belongs to (KeyError if none)."""
        cid = self._store.conversation_of(message_id)
        if cid not in self._store.ids():
            raise KeyError(f"No message {message_id!r} in this widget's conversations.")
        return cid

    def _show(self, cid: str) -> None:
        """The active branch of ``cid`` changed above its end: make it active, readers
        refetch its pages."""
        if cid != self._active:
            self.switch_conversation(cid)
        self._bump_epoch(cid)

    # ------------------------------------------------------------------ conversations

    def new_conversation(self, title: str | None = None) -> str:
        """Start a conversation on the current model and make it active; returns its id."""
        conv = self._store.create(title)
        model = self.active_model
        self._orch.open_conversation(conv.id, group=self._group, model=model)
        if model is not None:
            self._history.set_model(conv.id, model)
        self.switch_conversation(conv.id)
        return conv.id

    def switch_conversation(self, conversation_id: str) -> None:
        """Make another conversation active; it keeps its own history and model."""
        self._store.info(conversation_id)  # raises UnknownConversationError
        self._orch.set_active_conversation(conversation_id, group=self._group)
        self._active = conversation_id
        self._history.set_active(conversation_id)
        self._request_saved_model(conversation_id)
        self._changed("conversations", "transcript")

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        self._store.rename(conversation_id, title)
        self._changed("conversations")

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation; the last one is replaced by a new, empty one."""
        self._store.info(conversation_id)
        reply = self._reply
        if reply is not None and reply.conversation_id == conversation_id:
            reply.stop()
        self._store.delete(conversation_id)
        self._orch.close_conversation(conversation_id)
        if conversation_id == self._active:
            remaining = self._store.ids()
            if remaining:
                self.switch_conversation(remaining[-1])
            else:
                self.new_conversation()
        self._changed("conversations")

    def set_settings(self, **changes: Any) -> None:
        """Change generation settings: system_prompt, max_new_tokens, temperature, top_p,
        do_sample."""
        with self._lock:
            self._settings = settings_from(self._settings, changes)
            self._history.set_settings(persistence.settings_record(self._settings))
        self._changed("settings")

    def export_messages(self, conversation_id: str | None = None) -> list[dict[str, str]]:
        """A conversation as ``[{"role", "content"}, ...]``, ready for a chat template."""
        return [dict(m) for m in self._store.history(conversation_id or self._active)]

    def export_markdown(self, conversation_id: str | None = None) -> str:
        """A conversation's active branch as Markdown (versions noted, importable)."""
        return self._history.export_markdown(self._known(conversation_id))

    def export_json(self, conversation_id: str | None = None) -> dict[str, Any]:
        """A conversation as JSON: OpenAI ``messages`` (the active branch) plus a
        ``chatwidget`` block with the whole tree and each reply's model and usage."""
        return self._history.export_json(self._known(conversation_id))

    def import_conversation(self, source: Any, title: str | None = None) -> str:
        """A new conversation from a JSON or Markdown export, or an OpenAI messages list
        (a path, the file's text or the parsed value); made active, on the model in use
        (each reply keeps the model that wrote it). Returns its id.

        Malformed input raises ``ImportFormatError`` (a ValueError) saying what is wrong
        and where; nothing is imported then."""
        conv = self._history.import_conversation(source, title=title)
        # It goes on with the model in use, as a new conversation does: a file never makes
        # the kernel download the model it names.
        model = self.active_model
        self._history.set_model(conv.id, model)
        self._store.adopt(conv.id)
        self._orch.open_conversation(conv.id, group=self._group, model=model)
        self.switch_conversation(conv.id)
        return conv.id

    def workspaces(self) -> list[WorkspaceInfo]:
        """Every workspace of the history file, with its number of conversations."""
        return self._history.workspaces()

    def list_conversations(self, workspace: str | None = None) -> list[StoredConversation]:
        """The conversations of a workspace (default: this one), oldest first."""
        return self._history.list_conversations(workspace)

    def open_conversation(self, conversation_id: str) -> None:
        """Load a conversation of any workspace of the file and make it active."""
        conv = self._history.open_conversation(conversation_id)
        if conv.id not in self._store.ids():
            self._store.adopt(conv.id)
            self._orch.open_conversation(conv.id, group=self._group)
        self.switch_conversation(conv.id)

    def _known(self, conversation_id: str | None) -> str:
        cid = conversation_id or self._active
        self._store.info(cid)  # raises UnknownConversationError
        return cid

    # ------------------------------------------------------------------ events, errors, life

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every orchestrator event, in order (on its worker
        thread); returns an unsubscribe function."""
        unsubscribe = self._orch.subscribe(callback)
        self._subscriptions.append(unsubscribe)
        return unsubscribe

    def report(self, exc: BaseException) -> None:
        """Show a failure to the user (part ``errors``); the same one twice in a row once."""
        message = str(exc) or repr(exc)
        with self._lock:
            if self._errors and self._errors[-1].message == message:
                return
            self._error_seq += 1
            self._errors.append(Notice(self._error_seq, message))
        self._changed("errors")

    def wait_until_idle(self, timeout: float | None = 60.0) -> bool:
        """Wait until the queue is drained and no reply is running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._orch.wait_until_idle(timeout):
            return False
        return self._replies.wait_idle(
            None if deadline is None else max(0.0, deadline - time.monotonic())
        )

    def close(self) -> None:
        """Stop the reply and detach from the shared queue. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.stop()
        self._replies.close(5.0)
        self._unsubscribe()
        for unsubscribe in self._subscriptions:
            unsubscribe()
        for cid in self._store.ids():
            self._orch.close_conversation(cid)
        self._store.release()
        self._history.close()

    # ------------------------------------------------------------------ internals

    def storage_changed(self) -> None:
        """The history file's state changed (a warning came or went): show it."""
        self._changed("storage")

    def _changed(self, *parts: Part) -> None:
        with self._lock:
            self._changes.update(parts)
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _bump_epoch(self, conversation_id: str) -> None:
        """Messages other than the newest changed in place: readers must refetch pages."""
        with self._lock:
            self._epochs[conversation_id] = self._epochs.get(conversation_id, 0) + 1
        self._changed("transcript")

    def _coerce(self, model: ModelSpec | str) -> ModelSpec:
        """A spec for ``model``. One that names no precision (``auto``) takes the precision
        the queue already has for that model, so another widget's choice for it stands."""
        spec = ModelSpec.coerce(model)
        if (spec.dtype, spec.quantization) != ("auto", None):
            return spec
        try:
            known = self._orch.spec(spec.repo_id)
        except ChatWidgetError:  # not registered yet
            return spec
        if same_load(replace(known, dtype="auto", quantization=None), spec):
            return replace(spec, dtype=known.dtype, quantization=known.quantization)
        return spec

    def _add_spec(self, spec: ModelSpec) -> ModelSpec:
        with self._lock:
            known = self._catalog.get(spec.repo_id)
            if known is not None:
                return known
            self._catalog[spec.repo_id] = spec
        self._orch.register(spec)
        return spec

    def _require_idle(self) -> None:
        if self.generating:
            raise RuntimeError("A reply is still being generated: stop it or wait for it.")

    def _require_model(self, cid: str) -> str:
        model = self._orch.active_model(cid)
        if model is None:
            waiting = self._orch.requested_model(cid)
            raise NoActiveModelError(
                f"No model is ready in this conversation yet: waiting for {waiting}."
                if waiting
                else "Pick a model first: no model is active in this conversation."
            )
        return model

    def _start_reply(self, cid: str) -> ReplyHandle:
        model = self._require_model(cid)
        history = CheckedChat(self._store.history(cid))  # the session made every message
        assistant = Message(new_id("m"), "assistant", "", status="streaming", model=model)
        text = self.deltas.text
        checkpoint = self._store.checkpointer(assistant.id, lambda: text(assistant.id))
        self.deltas.open(cid, assistant.id, on_append=checkpoint.poke)
        handle = ReplyHandle(cid, assistant.id)
        self._reply = handle
        settings, remote = self._settings, REMOTE_SEPARATOR in model  # as ModelSpec.is_remote
        stored = threading.Event()  # the reply's row is in the store: it may be updated

        def job() -> None:
            self._run_reply(handle, history, settings, remote=remote, stored=stored)

        def record() -> None:  # the turn's start: the reply's row and checkpoints, the UI
            try:
                self._store.append(cid, assistant)
                checkpoint.arm()
            finally:
                stored.set()
            self._changed("transcript", "activity")

        if remote:  # the request first: the turn's start is recorded while the server works
            self._replies.submit(job, hand_over=True)
            record()
        else:  # the turn's start is due first: the reply settles on it before encoding
            record()
            self._replies.submit(job)
        return handle

    def _run_reply(
        self,
        handle: ReplyHandle,
        history: Sequence[dict[str, str]],
        settings: GenerationSettings,
        *,
        remote: bool,
        stored: threading.Event,
    ) -> None:
        cid, mid = handle.conversation_id, handle.message_id
        append = self.deltas.append
        first = handle._got_text
        settle = self.settle
        if settle is not None and not remote:
            settle()

        def on_text(piece: str) -> None:
            append(mid, piece)
            first()

        def on_phase(phase: str) -> None:
            self._loading = mid if phase == PHASE_LOADING else None
            self._changed("transcript")

        try:
            result = self._orch.generate(
                cid, history, settings, on_text=on_text, stop=handle.stop_event, on_phase=on_phase
            )
        except Exception as exc:
            log.warning("Reply failed: %s", exc)
            partial = self.deltas.close(mid)
            stored.wait()
            self._store_update(cid, mid, content=partial, status="error", error=str(exc))
            self.report(exc)
            handle._fail(exc)
        else:
            self.deltas.close(mid)
            usage = result.usage
            stored.wait()
            self._store_update(
                cid,
                mid,
                content=result.text,
                status="stopped" if result.stopped else "done",
                model=usage.model,
                prompt_tokens=usage.prompt_tokens,
                new_tokens=usage.new_tokens,
                time_to_first_token_s=usage.time_to_first_token_s,
                tokens_per_s=usage.tokens_per_s,
                duration_s=usage.duration_s,
            )
            handle._finish(result)
            # Let a caller waiting on the reply (``send(...).wait()``) run before the turn's
            # end is rendered: it is woken now, and would otherwise queue for the
            # interpreter behind the publisher's round.
            time.sleep(0)
        finally:
            self._loading = None
            self._changed("transcript", "activity")

    def _store_update(self, cid: str, mid: str, **changes: object) -> None:
        try:
            self._store.update(cid, mid, **changes)
        except (KeyError, ChatWidgetError):
            log.info("Conversation %s was deleted while its reply ran", cid)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ErrorReported) and event.repo_id is None:
            # Not tied to a model row (a failing event subscriber, say): show it here.
            self.report(RuntimeError(f"{event.source} failed: {event.message}"))
            return
        if isinstance(event, ProgressChanged):
            self._changed("downloads")
        elif isinstance(event, Switched):
            if event.conversation_id in self._store.ids():
                with self._lock:
                    self._switch_seq += 1
                    self._switch = SwitchNotice(
                        self._switch_seq, event.conversation_id, event.repo_id
                    )
                self._changed("switch", "conversations")
        elif isinstance(event, StateChanged | Evicted):
            if isinstance(event, Evicted):
                with self._lock:
                    self._freed[event.repo_id] = event.freed_bytes
            self._changed("models", "downloads", "conversations", "activity")
        else:
            self._changed("models", "downloads", "conversations")
