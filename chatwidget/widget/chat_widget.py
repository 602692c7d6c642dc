"""ChatWidget: the anywidget that shows the chat, the model selector and the download manager.

The widget is thin: traits, the one publisher thread that writes them
(:class:`~chatwidget.widget.sync.Publisher`), and message dispatch. What the Python API
does lives in :class:`~chatwidget.session.Session`; intents go from there to the shared
:class:`~chatwidget.orchestrator.Orchestrator`, whose events come back to the session.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import anywidget
import traitlets

from chatwidget import runtime
from chatwidget.catalog import ModelSpec, validate_model_key, validate_repo_id
from chatwidget.compare.handle import CompareHandle
from chatwidget.compare.view import CompareMode
from chatwidget.errors import ChatWidgetError, ProtocolError
from chatwidget.fit import FitTable
from chatwidget.history import History, HistoryOption
from chatwidget.history.types import Comparison, ConversationInfo, Versions, WorkspaceInfo
from chatwidget.orchestrator import Event, MemoryPolicy, OrchestratorSnapshot, UnloadResult
from chatwidget.session import PARTS, Part, ReplyHandle, Session
from chatwidget.session.messages import new_id
from chatwidget.widget import fallback, views
from chatwidget.widget.fit_options import FitEstimates, spec_for_option
from chatwidget.widget.intents import short_id, validate
from chatwidget.widget.protocol import MAX_HISTORY_LIMIT, Reply, ServerRow
from chatwidget.widget.servers import TRAIT as SERVERS_TRAIT
from chatwidget.widget.servers import ServerBook, ServersArg, server_args
from chatwidget.widget.sync import Publisher

log = logging.getLogger("chatwidget.widget")

MODEL_INTENTS = frozenset(
    {
        "select_model",
        "add_model",
        "unload_model",
        "free_memory",
        "set_token",
        "set_precision",
        "estimate_fit",
        "cancel_download",
        "retry_download",
    }
)
SERVER_INTENTS = frozenset({"add_server", "remove_server", "refresh_server"})
#: Intents about the history: versions, edits, export and import.
HISTORY_INTENTS = frozenset({"edit", "select_version", "export", "import_conversation"})

#: The change part the widget adds to the session's (see :meth:`ChatWidget._take_changes`).
SERVERS_PART = "servers"

_STATIC = Path(__file__).parent.parent / "static"
#: The most a reply waits for its start to be published before it encodes the prompt.
SETTLE_TIMEOUT_S = 0.2


class ChatWidget(anywidget.AnyWidget):
    """Chat with local Hugging Face models; switch models mid-conversation.

    Args:
        models: repo ids or :class:`ModelSpec` to offer. Defaults to a catalog of small
            open instruct models.
        model: a model to request for the first conversation at once.
        token: a Hugging Face token for gated or private repos. Kept by the downloader
            only; never placed in widget state. Defaults to huggingface_hub's usual sources.
        endpoint: the hub to download from (defaults to ``HF_ENDPOINT`` or the Hub).
        cache_dir: the HF cache to use (defaults to the standard one).
        memory_budget: most memory loaded models may take together (bytes or ``"8GB"``);
            default ``CHATWIDGET_MEMORY_BUDGET``, else half the free memory.
        max_loaded_models: most models loaded at once; default
            ``CHATWIDGET_MAX_LOADED_MODELS``, else no limit.
        keep_alive: unload a model unused this long (seconds or ``"10m"``; the active one
            too: it loads again on the next message); default ``CHATWIDGET_KEEP_ALIVE``,
            else never. The policy is shared by every widget on the same hub and cache.
        servers: OpenAI-compatible servers to add at once (see :meth:`add_server`):
            ``{"gpu": "http://host:8000/v1"}``, or a list of base URLs or of
            ``{"base_url", "name", "api_key", "api_key_env"}`` mappings.
        history: where conversations are kept: a path to an SQLite file; None (default)
            for ``$CHATWIDGET_HISTORY`` or ``history.sqlite3`` in the user data folder;
            False for memory only. A new kernel with the same file and workspace shows the
            same conversations, messages, titles, models and settings.
        workspace: the group of conversations this widget shows (default: the notebook's
            path where the kernel knows it, else ``"default"``).

    Unknown keyword arguments raise ``TypeError`` naming the nearest valid one.
    """

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    seq = traitlets.Int(0).tag(sync=True)
    """Sequence number of the last batch of trait changes (see ``widget/protocol.py``)."""
    busy = traitlets.Bool(False).tag(sync=True)
    """Work is in flight: a reply, or a download or load of one of this widget's models."""
    models = traitlets.List(traitlets.Dict()).tag(sync=True)
    conversations = traitlets.List(traitlets.Dict()).tag(sync=True)
    active_conversation = traitlets.Unicode("").tag(sync=True)
    transcript = traitlets.Dict().tag(sync=True)
    """The active conversation's last page of messages (older pages: ``history`` requests)."""
    downloads = traitlets.List(traitlets.Dict()).tag(sync=True)
    """Download manager rows (repo id, state, bytes done and total, speed, ETA, error)."""
    settings = traitlets.Dict().tag(sync=True)
    generating = traitlets.Bool(False).tag(sync=True)
    last_switch = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    download_focus_seq = traitlets.Int(0).tag(sync=True)
    errors = traitlets.List(traitlets.Dict()).tag(sync=True)
    compare_state = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    """The Compare view's state (``chatwidget.compare.view``; its own publisher writes it)."""
    servers = traitlets.List(traitlets.Dict()).tag(sync=True)
    """OpenAI-compatible servers added to this widget: name, URL, status, models; no keys."""
    storage = traitlets.Dict().tag(sync=True)
    """The history file, the workspace, and a warning when saving stopped (chat goes on)."""

    def __init__(
        self,
        models: Iterable[ModelSpec | str] | None = None,
        model: ModelSpec | str | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
        *,
        memory_budget: int | str | None = None,
        max_loaded_models: int | str | None = None,
        keep_alive: float | str | None = None,
        servers: ServersArg = None,
        history: HistoryOption = None,
        workspace: str | None = None,
        **kwargs: Any,
    ) -> None:
        _check_keywords(kwargs)
        to_add = server_args(servers)  # malformed servers= fails before anything starts
        super().__init__(**kwargs)
        self._closed = False
        self._handling = threading.local()
        self._publisher: Publisher | None = None
        self._compare_mode: CompareMode | None = None
        self._shown: OrchestratorSnapshot | None = None
        self._fits: FitEstimates | None = None
        self._group = new_id("w")
        # Weakly owned: a widget that is garbage-collected without close() stops pinning
        # its models (the runtime's reaper closes its conversations and drops its token).
        self._consumer = runtime.connect(
            self,
            endpoint=endpoint,
            cache_dir=cache_dir,
            token=token,
            group=self._group,
            memory_budget=memory_budget,
            max_loaded_models=max_loaded_models,
            keep_alive=keep_alive,
        )
        self._runtime = self._consumer.runtime
        store = History.open(history, workspace, on_status=self._on_storage_status)
        try:
            self._session = Session(
                self._runtime, models, history=store, group=self._group, on_change=self._poke
            )
        except BaseException:
            store.close()
            self._consumer.close()
            raise
        self._fits = FitEstimates(
            self._runtime,
            group=self._group,
            cache_dir=self._runtime.downloader.cache_dir,
            on_change=self._fits_changed,
        )
        self._servers = ServerBook(self._runtime.remote, self._session, self._poke)
        self._publisher = Publisher(
            take_changes=self._take_changes,
            render=self._render,
            apply=self._apply,
            take_deltas=self._session.deltas.take,
            send=self._send_custom,
            urgent=self._urgent,
            changes_waiting=self._changes_waiting,
            on_error=self._session.report,
        )
        self._session.settle = self._settle
        # streamed text goes out from the reply thread when it can (see widget/sync.py)
        self._session.deltas.send_now = self._send_text_now
        self.on_msg(self._on_msg)
        try:
            for args in to_add:
                self._servers.add(**args)
        except BaseException:
            self.close()  # a refused server: nothing of this widget is left running
            raise
        if model is not None:
            self._session.select_model(model)
        self._publisher.flush()

    # ------------------------------------------------------------------ Python API

    @property
    def session(self) -> Session:
        """The session behind this widget: conversations, replies, settings."""
        return self._session

    @property
    def conversation_id(self) -> str:
        """The id of the active conversation."""
        return self._session.conversation_id

    @property
    def active_model(self) -> str | None:
        """The model that answers the next message in the active conversation (read from
        the same snapshot as :attr:`downloads` and :meth:`model_state`)."""
        return self._consistent().active_model(self._session.conversation_id)

    @property
    def requested_model(self) -> str | None:
        """The latest model asked for in the active conversation (may still be on its way)."""
        return self._session.requested_model

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The active conversation's messages, as the UI shows them."""
        deltas = self._session.deltas
        rows = []
        for m in self._session.messages():
            text = deltas.text(m.id) if m.status == "streaming" else None
            rows.append(dict(views.message_row(m, None if text is None else (text, 0))))
        return rows

    def model_state(self, repo_id: str) -> str:
        """The state label the UI shows: "Not downloaded", "Downloaded", "Queued", ....

        Read from the same snapshot as :attr:`downloads`, :attr:`models` and
        :attr:`active_model` (they are brought up to date together first)."""
        return self._consistent().state(repo_id).value

    @property
    def memory_policy(self) -> MemoryPolicy:
        """The memory policy in force (shared by every widget on this hub and cache): the
        budget in bytes (None: half the free memory), the model limit, keep_alive in s."""
        return self._runtime.policy

    def unload(self, model: str) -> UnloadResult:
        """Unload a loaded model now; it is Downloaded again and ``.freed_bytes`` says what
        it freed. A conversation on it loads it again on its next message. Raises
        ModelBusyError while a reply uses it: ``chat.stop()`` first."""
        with self._api():
            return self._session.unload(model)

    def free_memory(self, model: str | None = None) -> int:
        """Unload every loaded model no reply uses (then retry ``model``, one that did not
        fit); returns the bytes freed."""
        with self._api():
            return self._session.free_memory(model)

    def set_token(self, token: str | bool | None) -> tuple[str, ...]:
        """Use a Hugging Face token for this widget's downloads (gated or private repos).

        The token is kept by the downloader only: never in widget state, events, logs,
        reprs or errors. Models that failed for want of it are queued again (returned).
        """
        with self._api():
            return self._token_set(token)

    def set_precision(self, model: str, precision: str) -> ModelSpec:
        """Load ``model`` in ``precision`` from now on: ``"auto"``, ``"bfloat16"``,
        ``"float16"``, ``"float32"``, or ``"8bit"``/``"4bit"`` (bitsandbytes + CUDA). A
        loaded model in another precision is unloaded (it loads again when used)."""
        with self._api():
            repo_id = validate_repo_id(model)
            known = next((s for s in self._session.catalog if s.repo_id == repo_id), None)
            spec = spec_for_option(known or ModelSpec(repo_id), precision)
            table = self._fits.table(repo_id) if self._fits else None
            if table is not None and precision in {a.option for a in table.absent}:
                table.row(precision)  # raises KeyError saying why it is absent
            if known is None:
                self._session.add_model(spec, check=False)
                return spec
            return self._session.set_precision(repo_id, spec)

    def fit(self, model: str, timeout: float | None = 60.0) -> FitTable | None:
        """Will ``model`` fit, per precision option (before download: config and weight
        headers only). Estimated on a worker thread; waits up to ``timeout`` for it."""
        repo_id = validate_repo_id(model)
        assert self._fits is not None
        spec = next((s for s in self._session.catalog if s.repo_id == repo_id), None)
        self._fits.request(spec or ModelSpec(repo_id))
        self._fits.wait(repo_id, timeout)
        return self._fits.table(repo_id)

    def estimate_fits(self) -> None:
        """Estimate every catalog model's fit in the background (rows show the labels)."""
        assert self._fits is not None
        for spec in self._session.catalog:
            self._fits.request(spec)

    def select_model(self, model: ModelSpec | str) -> str:
        """Pick a model for the active conversation; returns its state label.

        A Ready model answers the next message. Any other model is queued (downloaded if
        needed, then loaded) and the download manager opens; chat continues on the current
        model until it is Ready.
        """
        with self._api():
            return self._session.select_model(model).value

    def add_model(self, model: ModelSpec | str, *, wait: bool = True) -> ModelSpec:
        """Add a model to the selector without selecting it, checked against the hub.

        ``wait=True``: asked in this cell, raising a clear error for an unknown or gated
        repo. ``wait=False``: returns at once; a worker thread asks the hub, and a model it
        does not know leaves the selector again (the reason shows in the widget). The
        widget's own Add field never waits for the hub: the queue's worker checks it.
        """
        with self._api():
            spec = self._session.add_model(model, wait=wait)
            if self._fits is not None:
                self._fits.request(spec)
            return spec

    def add_server(
        self,
        base_url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
    ) -> str:
        """Add an OpenAI-compatible server (vLLM, SGLang, Ray Serve LLM, llm-d,
        ``transformers serve``); returns its name.

        Its models (``GET /v1/models``) are listed in the background and appear in the
        selector as ``"{name}:{model id}"``; :meth:`wait_until_idle` waits for the listing,
        :meth:`server_models` gives them. ``name`` defaults to the URL's host. The key
        (``api_key``, or the environment variable named by ``api_key_env``) stays in this
        kernel: it is never in the widget's state, events, logs or error texts. Only http
        and https URLs are accepted.
        """
        with self._api():
            return self._servers.add(base_url, name=name, api_key=api_key, api_key_env=api_key_env)

    def remove_server(self, name: str) -> None:
        """Forget a server: its models leave the selector; a Ready one is evicted."""
        with self._api():
            self._servers.remove(name)

    def server_models(self, name: str) -> list[str]:
        """The keys of the models server ``name`` listed (empty while it still lists)."""
        return list(self._servers.models(name))

    @property
    def server_rows(self) -> list[ServerRow]:
        """The servers as the UI shows them (name, URL, status, models, wait; no keys)."""
        return self._servers.rows()

    def send(self, text: str) -> ReplyHandle:
        """Send a message in the active conversation; returns a handle to the reply."""
        with self._api():
            return self._session.send(text)

    def regenerate(self) -> ReplyHandle:
        """Generate the last reply of the active conversation again."""
        with self._api():
            return self._session.regenerate()

    def stop(self) -> None:
        """Stop the reply being generated, keeping what it has written."""
        self._session.stop()

    def cancel_download(self, repo_id: str) -> None:
        """Cancel a queued, downloading or compiling model."""
        with self._api():
            self._session.cancel_download(repo_id)

    def retry_download(self, repo_id: str) -> None:
        """Queue a failed or canceled model again."""
        with self._api():
            self._session.retry_download(repo_id)

    def new_conversation(self, title: str | None = None) -> str:
        """Start a conversation and make it active; returns its id."""
        with self._api():
            return self._session.new_conversation(title)

    def switch_conversation(self, conversation_id: str) -> None:
        """Make another conversation active; it keeps its own history and model."""
        with self._api():
            self._session.switch_conversation(conversation_id)

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        with self._api():
            self._session.rename_conversation(conversation_id, title)

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation; the last one is replaced by a new, empty one."""
        with self._api():
            self._session.delete_conversation(conversation_id)

    def set_settings(self, **changes: Any) -> None:
        """Change generation settings: system_prompt, max_new_tokens, temperature, top_p,
        do_sample."""
        with self._api():
            self._session.set_settings(**changes)

    def export_messages(self, conversation_id: str | None = None) -> list[dict[str, str]]:
        """A conversation as ``[{"role", "content"}, ...]``, ready for a chat template."""
        return self._session.export_messages(conversation_id)

    def export_markdown(self, conversation_id: str | None = None) -> str:
        """A conversation's active branch as Markdown (it can be imported again)."""
        return self._session.export_markdown(conversation_id)

    def export_conversation(
        self, path: str | Path | None = None, conversation_id: str | None = None
    ) -> dict[str, Any]:
        """A conversation as JSON: OpenAI ``messages`` of the active branch plus a
        ``chatwidget`` block with the whole tree, each reply's model and usage.

        With ``path``, also written there (``.md`` writes Markdown instead)."""
        data = self._session.export_json(conversation_id)
        if path is not None:
            target = Path(path)
            if target.suffix.lower() in (".md", ".markdown"):
                target.write_text(self._session.export_markdown(conversation_id), "utf-8")
            else:
                target.write_text(json.dumps(data, ensure_ascii=False, indent=2), "utf-8")
        return data

    def import_conversation(self, source: Any, title: str | None = None) -> str:
        """A new conversation from a JSON or Markdown export (a path or its text) or an
        OpenAI messages list; it becomes active. Returns its id.

        A malformed file is refused with ``ImportFormatError`` (a ValueError) that says
        what is wrong and where; nothing is imported."""
        with self._api():
            return self._session.import_conversation(source, title)

    def edit(self, message_id: str, text: str) -> ReplyHandle:
        """Replace one of your messages with ``text`` and reply to it: a new branch (the
        old one stays reachable through :meth:`versions`). Returns the reply's handle."""
        with self._api():
            return self._session.edit(message_id, text)

    def versions(self, message_id: str) -> Versions:
        """A message's versions: ``ids`` (oldest first), ``index`` shown, ``label`` "2 / 3"."""
        return self._session.versions(message_id)

    def select_version(self, message_id: str, index: int) -> None:
        """Show version ``index`` (from 0) of a message and the branch below it."""
        with self._api():
            self._session.select_version(message_id, index)

    @property
    def history(self) -> History:
        """The history behind this widget (``history.path`` is None with history=False)."""
        return self._session.history

    @property
    def workspace(self) -> str:
        return self._session.history.workspace

    def workspaces(self) -> list[WorkspaceInfo]:
        """Every workspace in the history file, newest first, with conversation counts."""
        return self._session.workspaces()

    def list_conversations(self, workspace: str | None = None) -> list[ConversationInfo]:
        """The conversations of a workspace (default: this widget's), oldest first."""
        return self._session.list_conversations(workspace)

    def open_conversation(self, conversation_id: str) -> None:
        """Show a conversation of any workspace of the file here (it becomes active)."""
        with self._api():
            self._session.open_conversation(conversation_id)

    def compare(
        self, prompt: str, models: Iterable[ModelSpec | str], blind: bool = False
    ) -> CompareHandle:
        """Answer ``prompt`` with 2-3 models side by side; returns a handle at once
        (``.wait()``, ``.to_markdown()``, ``.vote()``). Models not downloaded are queued as
        usual; no conversation's model changes. ``blind`` hides the names until the vote.
        See docs/compare.md."""
        with self._api():
            return self._compare().compare(prompt, models, blind=blind)

    def comparisons(self) -> list[Comparison]:
        """The saved comparisons (prompt, each model's answer, blind, vote), oldest first."""
        return self._compare().comparer.comparisons()

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every orchestrator event, in order; returns an
        unsubscribe function. Events come from the shared queue, on its worker thread: keep
        the callback short. A callback that raises is reported and does not stop the queue."""
        return self._session.subscribe(callback)

    def wait_until_idle(self, timeout: float | None = 60.0) -> bool:
        """Wait until the queue is drained, no reply is running, and the UI state is sent."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._servers.wait_until_listed(timeout):
            return False
        left_s = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._session.wait_until_idle(left_s):
            return False
        left = 5.0 if deadline is None else max(deadline - time.monotonic(), 0.5)
        assert self._publisher is not None
        return self._publisher.flush(left)

    def close(self) -> None:
        """Stop the reply, detach from the shared queue and close the widget. Idempotent."""
        if getattr(self, "_closed", True):  # closed, or __init__ never got this far
            return
        self._closed = True
        if self._compare_mode is not None:
            self._compare_mode.close()
        servers = getattr(self, "_servers", None)
        if servers is not None:
            servers.close()
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()
        if self._fits is not None:
            self._fits.close()
        if self._publisher is not None:
            self._publisher.close()
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            consumer.close()
        super().close()

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        state = self._render(PARTS)
        state["messages"] = self.messages
        summary = fallback.summary_markdown(state)
        data = {
            **data,
            "text/html": fallback.summary_html(state),
            "text/markdown": summary,
            "text/plain": summary,
        }
        return data, metadata

    # ------------------------------------------------------------------ publishing

    def _on_storage_status(self) -> None:
        session = getattr(self, "_session", None)
        if session is not None:
            session.storage_changed()

    def _poke(self) -> None:
        publisher = self._publisher
        if publisher is not None and publisher.alive:
            publisher.poke()

    def _settle(self) -> None:
        """Wait until the start of a reply is published (the reply thread, before it encodes
        the prompt): bounded, a slow round only delays the reply by ``SETTLE_TIMEOUT_S``."""
        publisher = self._publisher
        if publisher is not None and publisher.alive:
            publisher.flush(SETTLE_TIMEOUT_S)

    def _send_text_now(self) -> bool:
        """Streamed text, on the reply thread: sent at once when it may be (True), else left
        to the publisher (False)."""
        publisher = self._publisher
        if publisher is None or self._closed:
            return False
        try:
            return publisher.send_deltas_now()
        except Exception:  # the comm went away: the publisher's next round reports it
            log.debug("Sending streamed text failed", exc_info=True)
            return False

    def _changes_waiting(self) -> bool:
        """Trait changes beyond download progress wait to be published."""
        return self._session.urgent_changes() or self._servers.changed()

    def _urgent(self) -> bool:
        """Whether the publisher should go at once: a change beyond download progress, or a
        reply's first streamed text (time to first token is what the user sees: it must not
        wait for the next 50 ms round after the one that showed the empty reply)."""
        if self._changes_waiting():
            return True
        reply = self._session.reply
        if reply is None or reply.done:
            return False
        deltas = self._session.deltas
        taken = deltas.snapshot(reply.message_id)
        return taken is not None and taken[1] == 0 and bool(deltas.text(reply.message_id))

    def _take_changes(self) -> set[str]:
        parts: set[str] = set(self._session.take_changes())
        if self._servers.take_changes():
            parts.add(SERVERS_PART)
        return parts

    def _render(self, parts: Collection[Any]) -> dict[str, Any]:
        fits = self._fits
        session_parts = [p for p in parts if p in PARTS]
        out = views.render(
            self._session,
            cast("Collection[Part]", session_parts),
            fits=None if fits is None else fits.info,
            snapshot_taken=self._took,
        )
        # A wait notice ends with its model's Connecting or reply: redraw with those too.
        if parts is PARTS or {SERVERS_PART, "models", "activity"} & set(parts):
            out[SERVERS_TRAIT] = self._servers.rows()
        return out

    def _token_set(self, token: str | bool | None) -> tuple[str, ...]:
        retried = self._session.set_token(token)
        if self._fits is not None:  # models the hub refused to describe may be visible now
            self._fits.retry_unavailable(self._session.catalog)
        return retried

    def _took(self, snapshot: OrchestratorSnapshot) -> None:
        self._shown = snapshot

    def _fits_changed(self) -> None:
        self._session._changed("models")

    def _consistent(self) -> OrchestratorSnapshot:
        """Bring the model, download and conversation traits up to date from one snapshot,
        under the publisher's lock, and return that snapshot (Python reads agree with it)."""
        publisher = self._publisher
        if publisher is None or self._closed or not publisher.alive:
            return self._session.snapshot()
        with publisher.lock:
            values = self._render(views.MODEL_PARTS)
            snapshot = self._shown
            changed = {k: v for k, v in values.items() if getattr(self, k) != v}
            if changed:
                publisher.seq += 1
                changed["seq"] = publisher.seq
                self._apply(changed)
        assert snapshot is not None
        return snapshot

    def _apply(self, values: dict[str, Any]) -> None:
        with self.hold_sync():
            for name, value in values.items():
                setattr(self, name, value)

    def _send_custom(self, content: dict[str, Any]) -> None:
        # ``send`` is the chat API here; the custom-message channel is the base class's.
        anywidget.AnyWidget.send(self, content)

    @contextlib.contextmanager
    def _api(self) -> Iterator[None]:
        """Around a Python API call: afterwards, from the main thread, tell the front end
        the last ``seq`` and whether work is in flight (a host that drops messages from
        background threads, as Colab does, still learns that something started)."""
        try:
            yield
        finally:
            if not getattr(self._handling, "active", False) and _on_main_thread():
                self._notice()

    def _notice(self) -> None:
        publisher = self._publisher
        if publisher is None or self._closed or self.comm is None:
            return
        with publisher.lock:
            self._send_custom({"kind": "sync", "seq": publisher.seq, "busy": self._session.busy()})

    # ------------------------------------------------------------------ front-end messages

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Dispatch one intent from the front end and answer it, errors included."""
        fields = content if isinstance(content, dict) else {}
        kind = short_id(fields.get("kind"))
        reply: Reply = {
            "id": short_id(fields.get("id")) or "",
            "kind": f"{kind}-response" if kind else "error-response",
            "ok": True,
            "seq": 0,
            "busy": False,
        }
        snapshot = False
        self._handling.active = True
        try:
            name, args = validate(content)
            snapshot = self._dispatch(name, args, reply)
        except (ChatWidgetError, ValueError, RuntimeError, LookupError) as exc:
            # Expected failures: bad input or a refused action. Answer; change nothing.
            reply["ok"] = False
            reply["error"] = str(exc)
            if not isinstance(exc, ProtocolError):
                log.info("Intent %s refused: %s", kind, exc)
            else:
                log.warning("Malformed message from the front end: %s", exc)
        except Exception as exc:
            log.exception("Handling %s failed", kind)
            reply["ok"] = False
            reply["error"] = f"Internal error: {exc}"
            self._session.report(exc)
        finally:
            self._handling.active = False
        self._answer(reply, snapshot=snapshot)

    def _answer(self, reply: Reply, *, snapshot: bool) -> None:
        """Send ``reply`` with the last ``seq`` (and the whole state for a snapshot), under
        the publisher's lock, so nothing newer than the state it carries has gone out."""
        publisher = self._publisher
        assert publisher is not None
        with publisher.lock:
            if snapshot:
                state = self._render(PARTS)
                state["seq"] = publisher.seq
                reply["state"] = cast("Any", state)
            reply["seq"] = publisher.seq
            reply["busy"] = self._session.busy()
            self._send_custom(dict(reply))

    def _dispatch(self, kind: str, args: dict[str, Any], reply: Reply) -> bool:
        """Act on one intent; returns True when the answer must carry a snapshot."""
        if kind in MODEL_INTENTS:
            self._model_intent(kind, args)
            return False
        if kind in SERVER_INTENTS:
            self._server_intent(kind, args)
            return False
        if kind in HISTORY_INTENTS:
            self._history_intent(kind, args, reply)
            return False
        s = self._session
        match kind:
            case "send":
                s.send(args["text"])
            case "stop":
                s.stop()
            case "regenerate":
                s.regenerate()
            case "new_conversation":
                s.new_conversation()
            case "switch_conversation":
                s.switch_conversation(args["conversation_id"])
            case "rename_conversation":
                s.rename_conversation(args["conversation_id"], args["title"])
            case "delete_conversation":
                s.delete_conversation(args["conversation_id"])
            case "set_settings":
                s.set_settings(**args["settings"])
            case "resync":
                return True
            case "history":
                reply["page"] = self._history(args)
            case "compare" | "compare_vote" | "compare_stop" | "compare_sync" | "compare_export":
                self._compare().intent(kind, args, reply)
            case _:  # pragma: no cover - validate() rejects unknown kinds
                raise ProtocolError(f"Unknown message kind {kind!r}.")
        return False

    def _history_intent(self, kind: str, args: dict[str, Any], reply: Reply) -> None:
        """The pager, Edit, and the chat header's export and import."""
        s = self._session
        match kind:
            case "edit":
                s.edit(args["message_id"], args["text"])
            case "select_version":
                s.select_version(args["message_id"], args["index"])
            case "export":
                reply["file"] = self._export_file(args["conversation_id"], args["format"])
            case "import_conversation":
                # Bytes: the front end's text is content, never a path to read.
                s.import_conversation(args["text"].encode("utf-8"))
            case _:  # pragma: no cover - HISTORY_INTENTS lists the cases above
                raise ProtocolError(f"Unknown message kind {kind!r}.")

    def _export_file(self, conversation_id: str, fmt: str) -> Any:
        s = self._session
        title = s.store.info(conversation_id).title  # raises UnknownConversationError
        stem = _file_stem(title)
        if fmt == "markdown":
            return {
                "filename": f"{stem}.md",
                "mime": "text/markdown",
                "text": s.export_markdown(conversation_id),
            }
        if fmt == "json":
            text = json.dumps(s.export_json(conversation_id), ensure_ascii=False, indent=2)
            return {"filename": f"{stem}.json", "mime": "application/json", "text": text}
        raise ProtocolError("Unknown export format: use 'markdown' or 'json'.")

    def _model_intent(self, kind: str, args: dict[str, Any]) -> None:
        """Selecting, adding, unloading, tokens, precision and the queue's buttons."""
        s = self._session
        match kind:
            case "select_model":
                s.select_model(validate_model_key(args["repo_id"]))
            case "add_model":
                # No hub request here: the queue's worker asks the hub, and a failure
                # (not found, gated: "Add a token") shows in the model's row.
                repo_id = validate_model_key(args["repo_id"])
                if not s.knows(repo_id):
                    s.add_model(repo_id, check=False)
                s.select_model(repo_id)
                if self._fits is not None:
                    self._fits.request(next(m for m in s.catalog if m.repo_id == repo_id))
            case "unload_model":
                s.unload(validate_repo_id(args["repo_id"]))
            case "free_memory":
                s.free_memory(validate_repo_id(args["repo_id"]))
            case "set_token":
                # The token goes to the downloader and nowhere else; never logged or echoed.
                self._token_set(args["token"])
            case "set_precision":
                self.set_precision(args["repo_id"], args["option"])
            case "estimate_fit":
                self.estimate_fits()
            case "cancel_download":
                s.cancel_download(validate_model_key(args["repo_id"]))
            case "retry_download":
                s.retry_download(validate_model_key(args["repo_id"]))
            case _:  # pragma: no cover - MODEL_INTENTS lists the cases above
                raise ProtocolError(f"Unknown message kind {kind!r}.")

    def _server_intent(self, kind: str, args: dict[str, Any]) -> None:
        """The Servers panel's form and buttons."""
        match kind:
            case "add_server":
                self._servers.add(
                    args["base_url"],
                    name=args["name"].strip() or None,
                    api_key=args["api_key"] or None,
                )
            case "remove_server":
                self._servers.remove(args["name"])
            case "refresh_server":
                self._servers.refresh(args["name"])
            case _:  # pragma: no cover - SERVER_INTENTS lists the cases above
                raise ProtocolError(f"Unknown message kind {kind!r}.")

    def _compare(self) -> CompareMode:
        """Compare mode, started on first use (its publisher thread writes ``compare_state``)."""
        if self._compare_mode is None:
            if self._closed:
                raise RuntimeError("This widget is closed: create a new one to compare.")
            self._compare_mode = CompareMode(
                self._runtime,
                group=self._group,
                session=self._session,
                apply=self._apply,
                send=self._send_custom,
                on_error=self._session.report,
            )
        return self._compare_mode

    def _history(self, args: dict[str, Any]) -> Any:
        cid, before, limit = args["conversation_id"], args["before"], args["limit"]
        if not 1 <= limit <= MAX_HISTORY_LIMIT or before < 0:
            raise ProtocolError(f"history needs 0 <= before and 1 <= limit <= {MAX_HISTORY_LIMIT}.")
        s = self._session
        total = s.store.info(cid).count  # raises UnknownConversationError
        start, messages = s.page(cid, min(before, total), limit)
        return {
            "conversation_id": cid,
            "epoch": s.epoch(cid),
            "start": start,
            "total": total,
            "messages": views.message_rows(messages, s.deltas),
        }


def _file_stem(title: str) -> str:
    """A file name from a conversation title (letters, digits, - and _ only)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", title).strip("-")[:60]
    return stem or "conversation"


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


#: Keyword arguments ChatWidget passes on to the DOM widget it is.
_WIDGET_KEYWORDS = frozenset({"layout", "tabbable", "tooltip"})


def _check_keywords(kwargs: dict[str, Any]) -> None:
    """Raise TypeError for an unknown keyword, naming the nearest valid one."""
    own = set(inspect.signature(ChatWidget.__init__).parameters) - {"self", "kwargs"}
    valid = sorted(own | _WIDGET_KEYWORDS)
    for name in kwargs:
        if name in _WIDGET_KEYWORDS:
            continue
        near = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else f"; valid ones: {', '.join(valid)}."
        raise TypeError(f"ChatWidget() got an unexpected keyword argument {name!r}{hint}")
