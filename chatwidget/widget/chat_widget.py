"""ChatWidget: the anywidget that shows the chat, the model selector and the download manager.

The widget holds traits and dispatches messages; it decides nothing. User intents from the
front end (custom messages) and from Python go to the shared
:class:`~chatwidget.orchestrator.Orchestrator`; state comes back as orchestrator events and
is rendered into traits by a single :class:`~chatwidget.widget.sync.TraitPublisher` thread.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from chatwidget import runtime
from chatwidget.catalog import DEFAULT_CATALOG, ModelSpec, validate_repo_id
from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import ChatWidgetError, NoActiveModelError, ProtocolError
from chatwidget.orchestrator import ErrorReported, Event, ModelState, Switched
from chatwidget.widget import fallback, views
from chatwidget.widget.conversation import ConversationStore, Message, new_id
from chatwidget.widget.protocol import INTENT_FIELDS, ErrorNotice, Reply, SwitchNotice
from chatwidget.widget.reply import ReplyHandle
from chatwidget.widget.sync import TraitPublisher

log = logging.getLogger("chatwidget.widget")

_STATIC = Path(__file__).parent.parent / "static"
_MAX_ERRORS = 20


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
    """

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    models = traitlets.List(traitlets.Dict()).tag(sync=True)
    conversations = traitlets.List(traitlets.Dict()).tag(sync=True)
    active_conversation = traitlets.Unicode("").tag(sync=True)
    downloads = traitlets.List(traitlets.Dict()).tag(sync=True)
    """Download manager rows (repo id, state, bytes done and total, speed, ETA, error)."""
    settings = traitlets.Dict().tag(sync=True)
    generating = traitlets.Bool(False).tag(sync=True)
    last_switch = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    download_focus_seq = traitlets.Int(0).tag(sync=True)
    errors = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(
        self,
        models: Iterable[ModelSpec | str] | None = None,
        model: ModelSpec | str | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._closed = False
        self._group = new_id("w")
        self._store = ConversationStore()
        self._catalog: dict[str, ModelSpec] = {}
        self._download_order: list[str] = []
        self._settings = GenerationSettings()
        self._errors: collections.deque[ErrorNotice] = collections.deque(maxlen=_MAX_ERRORS)
        self._error_seq = 0
        self._switch: SwitchNotice | None = None
        self._switch_seq = 0
        self._focus_seq = 0
        self._reply: ReplyHandle | None = None
        self._reply_thread: threading.Thread | None = None
        self._subscriptions: list[Callable[[], None]] = []

        self._runtime = runtime.acquire(
            endpoint=endpoint, cache_dir=cache_dir, token=token, group=self._group
        )
        self._orch = self._runtime.orchestrator
        for spec in models if models is not None else DEFAULT_CATALOG:
            self._add_spec(ModelSpec.coerce(spec))
        first = self._store.create()
        self._orch.open_conversation(first.id, group=self._group)
        self._orch.set_active_conversation(first.id, group=self._group)
        self._active = first.id

        self._publisher = TraitPublisher(self._render, self._apply, on_error=self._report)
        self._unsubscribe = self._orch.subscribe(self._on_event)
        self.on_msg(self._on_msg)
        if model is not None:
            self.select_model(model)
        self._publisher.flush()

    # ------------------------------------------------------------------ Python API

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
    def messages(self) -> list[dict[str, Any]]:
        """The active conversation's messages, as the UI shows them."""
        return [dict(views.message_row(m)) for m in self._store.get(self._active).messages]

    def model_state(self, repo_id: str) -> str:
        """The state label the UI shows: "Not downloaded", "Downloaded", "Queued", ...."""
        return views.state_label(self._orch.snapshot(), repo_id)

    def select_model(self, model: ModelSpec | str) -> str:
        """Pick a model for the active conversation; returns its state label.

        A Ready model answers the next message. Any other model is queued (downloaded if
        needed, then loaded) and the download manager opens; chat continues on the current
        model until it is Ready.
        """
        spec = self._add_spec(ModelSpec.coerce(model))
        state = self._orch.request_model(self._active, spec)
        if state is not ModelState.READY:
            with self._lock:
                if spec.repo_id in self._download_order:
                    self._download_order.remove(spec.repo_id)
                self._download_order.append(spec.repo_id)
                self._focus_seq += 1
        self._poke()
        return state.value

    def add_model(self, model: ModelSpec | str) -> ModelSpec:
        """Add a model to the selector (validated against the hub) without selecting it."""
        spec = ModelSpec.coerce(model)
        self._runtime.downloader.plan(spec)  # raises a clear error for unknown/gated repos
        self._add_spec(spec)
        self._poke()
        return spec

    def send(self, text: str) -> ReplyHandle:
        """Send a message in the active conversation; returns a handle to the reply."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Type a message first: it cannot be empty.")
        cid = self._active
        with self._lock:
            if self._reply is not None and not self._reply.done:
                raise RuntimeError("A reply is still being generated: stop it or wait for it.")
            self._require_model(cid)
            self._store.append(cid, Message(new_id("m"), "user", text))
            return self._start_reply(cid)

    def regenerate(self) -> ReplyHandle:
        """Generate the last reply of the active conversation again."""
        cid = self._active
        with self._lock:
            if self._reply is not None and not self._reply.done:
                raise RuntimeError("A reply is still being generated: stop it or wait for it.")
            self._require_model(cid)
            if self._store.truncate_after_last_user(cid) is None:
                raise ValueError("There is no message to regenerate a reply for.")
            return self._start_reply(cid)

    def stop(self) -> None:
        """Stop the reply being generated, keeping what it has written."""
        reply = self._reply
        if reply is not None:
            reply.stop()

    def cancel_download(self, repo_id: str) -> None:
        """Cancel a queued, downloading or compiling model."""
        self._orch.cancel(validate_repo_id(repo_id))
        self._poke()

    def retry_download(self, repo_id: str) -> None:
        """Queue a failed or canceled model again."""
        repo_id = validate_repo_id(repo_id)
        self._orch.retry(repo_id)
        with self._lock:
            if repo_id not in self._download_order:
                self._download_order.append(repo_id)
        self._poke()

    def new_conversation(self, title: str | None = None) -> str:
        """Start a conversation and make it active; returns its id."""
        conv = self._store.create(title)
        self._orch.open_conversation(conv.id, group=self._group, model=self.active_model)
        self.switch_conversation(conv.id)
        return conv.id

    def switch_conversation(self, conversation_id: str) -> None:
        """Make another conversation active; it keeps its own history and model."""
        self._store.get(conversation_id)  # raises UnknownConversationError
        self._orch.set_active_conversation(conversation_id, group=self._group)
        self._active = conversation_id
        self._poke()

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        self._store.rename(conversation_id, title)
        self._poke()

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation; the last one is replaced by a new, empty one."""
        self._store.get(conversation_id)
        if self._reply is not None and self._reply.conversation_id == conversation_id:
            self._reply.stop()
        self._store.delete(conversation_id)
        self._orch.close_conversation(conversation_id)
        if conversation_id == self._active:
            remaining = self._store.ids()
            if remaining:
                self.switch_conversation(remaining[-1])
            else:
                self.new_conversation()
        self._poke()

    def set_settings(self, **changes: Any) -> None:
        """Change generation settings: system_prompt, max_new_tokens, temperature, top_p,
        do_sample."""
        with self._lock:
            self._settings = views.settings_from(self._settings, changes)
        self._poke()

    def export_messages(self, conversation_id: str | None = None) -> list[dict[str, str]]:
        """A conversation as ``[{"role", "content"}, ...]``, ready for a chat template."""
        return self._store.get(conversation_id or self._active).history()

    def export_markdown(self, conversation_id: str | None = None) -> str:
        """A conversation as Markdown."""
        return self._store.get(conversation_id or self._active).to_markdown()

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every orchestrator event, in order; returns an
        unsubscribe function. Events come from the shared queue, on its worker thread: keep
        the callback short. A callback that raises is reported and does not stop the queue."""
        unsubscribe = self._orch.subscribe(callback)
        self._subscriptions.append(unsubscribe)
        return unsubscribe

    def wait_until_idle(self, timeout: float | None = 60.0) -> bool:
        """Wait until the queue is drained, no reply is running, and the UI state is sent."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if not self._orch.wait_until_idle(left()):
            return False
        thread = self._reply_thread
        if thread is not None:
            thread.join(left())
            if thread.is_alive():
                return False
        remaining = left()
        return self._publisher.flush(5.0 if remaining is None else max(remaining, 0.5))

    def close(self) -> None:
        """Stop the reply, detach from the shared queue and close the widget. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.stop()
        if self._reply_thread is not None:
            self._reply_thread.join(5.0)
        self._unsubscribe()
        for unsubscribe in self._subscriptions:
            unsubscribe()
        self._publisher.close()
        for cid in self._store.ids():
            self._orch.close_conversation(cid)
        runtime.release(self._runtime, group=self._group)
        super().close()

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        state = self._render()
        summary = fallback.summary_markdown(state)
        data = {
            **data,
            "text/html": fallback.summary_html(state),
            "text/markdown": summary,
            "text/plain": summary,
        }
        return data, metadata

    # ------------------------------------------------------------------ internals

    def _add_spec(self, spec: ModelSpec) -> ModelSpec:
        with self._lock:
            known = self._catalog.get(spec.repo_id)
            if known is not None:
                return known
            self._catalog[spec.repo_id] = spec
        self._orch.register(spec)
        return spec

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
        conv = self._store.get(cid)
        history = conv.history()
        assistant = Message(new_id("m"), "assistant", "", status="streaming", model=model)
        self._store.append(cid, assistant)
        handle = ReplyHandle(cid, assistant.id)
        self._reply = handle
        settings = self._settings
        thread = threading.Thread(
            target=self._run_reply,
            args=(handle, history, settings),
            name="chatwidget-reply",
            daemon=True,
        )
        self._reply_thread = thread
        thread.start()
        self._poke()
        return handle

    def _run_reply(
        self, handle: ReplyHandle, history: Sequence[dict[str, str]], settings: GenerationSettings
    ) -> None:
        cid, mid = handle.conversation_id, handle.message_id

        def on_text(piece: str) -> None:
            self._store.append_text(cid, mid, piece)
            handle._got_text()
            self._poke()

        try:
            result = self._orch.generate(
                cid, history, settings, on_text=on_text, stop=handle.stop_event
            )
        except Exception as exc:
            log.warning("Reply failed: %s", exc)
            self._store_update(cid, mid, status="error", error=str(exc))
            self._report(exc)
            handle._fail(exc)
        else:
            usage = result.usage
            self._store_update(
                cid,
                mid,
                content=result.text,
                status="stopped" if result.stopped else "done",
                model=usage.model,
                new_tokens=usage.new_tokens,
                tokens_per_s=usage.tokens_per_s,
            )
            handle._finish(result)
        finally:
            self._poke()

    def _store_update(self, cid: str, mid: str, **changes: object) -> None:
        try:
            self._store.update(cid, mid, **changes)
        except (KeyError, ChatWidgetError):
            log.info("Conversation %s was deleted while its reply ran", cid)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ErrorReported) and event.repo_id is None:
            # Not tied to a model row (a failing event subscriber, say): show it here.
            self._report(RuntimeError(f"{event.source} failed: {event.message}"))
            return
        if isinstance(event, Switched) and event.conversation_id in self._store.ids():
            with self._lock:
                self._switch_seq += 1
                self._switch = {
                    "seq": self._switch_seq,
                    "conversation_id": event.conversation_id,
                    "repo_id": event.repo_id,
                }
        self._poke()

    def _poke(self) -> None:
        if self._publisher.alive:
            self._publisher.poke()

    def _report(self, exc: BaseException) -> None:
        """Show a failure in the widget (trait ``errors``) and keep the details in the log."""
        message = str(exc) or repr(exc)
        with self._lock:
            if self._errors and self._errors[-1]["message"] == message:
                return  # the same failure again (e.g. on every event): shown once
            self._error_seq += 1
            self._errors.append({"seq": self._error_seq, "message": message})
        self._poke()

    def _render(self) -> dict[str, Any]:
        snapshot = self._orch.snapshot()
        with self._lock:
            specs = list(self._catalog.values())
            order = list(self._download_order)
            reply = self._reply
            state: dict[str, Any] = {
                "settings": views.settings_dict(self._settings),
                "last_switch": dict(self._switch) if self._switch else None,
                "download_focus_seq": self._focus_seq,
                "errors": [dict(e) for e in self._errors],
            }
        state.update(
            models=views.model_rows(specs, snapshot),
            conversations=views.conversation_rows(self._store.all(), snapshot),
            active_conversation=self._active,
            downloads=views.download_rows(order, snapshot),
            generating=reply is not None and not reply.done,
        )
        return state

    def _apply(self, changed: Mapping[str, Any]) -> None:
        with self.hold_sync():
            for name, value in changed.items():
                setattr(self, name, value)

    # ------------------------------------------------------------------ front-end messages

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Dispatch one intent from the front end and answer it, errors included."""
        req_id = content.get("id") if isinstance(content, dict) else None
        kind = content.get("kind") if isinstance(content, dict) else None
        reply: Reply = {
            "id": req_id if isinstance(req_id, str) else "",
            "kind": f"{kind}-response" if isinstance(kind, str) else "error-response",
            "ok": True,
        }
        try:
            args = _validate(content)
            self._dispatch(str(kind), args)
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
            self._report(exc)
        # ``send`` is the chat API here; the custom-message channel is the base class's.
        anywidget.AnyWidget.send(self, dict(reply))

    def _dispatch(self, kind: str, args: dict[str, Any]) -> None:
        match kind:
            case "send":
                self.send(args["text"])
            case "stop":
                self.stop()
            case "regenerate":
                self.regenerate()
            case "select_model":
                self.select_model(validate_repo_id(args["repo_id"]))
            case "add_model":
                self._add_and_select(validate_repo_id(args["repo_id"]))
            case "cancel_download":
                self.cancel_download(args["repo_id"])
            case "retry_download":
                self.retry_download(args["repo_id"])
            case "new_conversation":
                self.new_conversation()
            case "switch_conversation":
                self.switch_conversation(args["conversation_id"])
            case "rename_conversation":
                self.rename_conversation(args["conversation_id"], args["title"])
            case "delete_conversation":
                self.delete_conversation(args["conversation_id"])
            case "set_settings":
                self.set_settings(**args["settings"])
            case _:  # pragma: no cover - _validate rejects unknown kinds
                raise ProtocolError(f"Unknown message kind {kind!r}.")

    def _add_and_select(self, repo_id: str) -> None:
        if repo_id not in self._catalog:
            self.add_model(repo_id)
        self.select_model(repo_id)


def _validate(content: Any) -> dict[str, Any]:
    """Check a front-end message against :data:`INTENT_FIELDS`; raise ProtocolError."""
    if not isinstance(content, dict):
        raise ProtocolError(f"A message must be an object, not {type(content).__name__}.")
    if not isinstance(content.get("id"), str) or not content["id"]:
        raise ProtocolError("A message needs a non-empty string 'id'.")
    kind = content.get("kind")
    if not isinstance(kind, str) or kind not in INTENT_FIELDS:
        raise ProtocolError(f"Unknown message kind {kind!r}; known: {sorted(INTENT_FIELDS)}.")
    args: dict[str, Any] = {}
    for name, typ in INTENT_FIELDS[kind].items():
        if name not in content:
            raise ProtocolError(f"Message {kind!r} needs a field {name!r}.")
        value = content[name]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            raise ProtocolError(f"Field {name!r} of {kind!r} has the wrong type.")
        args[name] = value
    return args
