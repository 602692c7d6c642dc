"""The widget's wire vocabulary: synced traits, kernel messages and front-end intents.

This module is the source: ``js/src/protocol.ts`` is generated from it
(``python -m chatwidget.widget.tsgen``), and a test fails when the two differ.

**Traits** (written by the kernel's publisher thread only) carry durable state: the
conversation list, the active conversation's latest page of messages at turn boundaries
(:class:`Transcript`), model and download rows, settings and errors. Every batch of trait
changes sets ``seq`` too.

**Kernel messages** (custom messages to the front end):

- :class:`Delta`: streamed text, ``text`` appended to message ``message_id`` as its chunk
  ``index`` (chunks count from 0 per message; a row's ``chunks`` says how many its
  ``content`` holds).
- :class:`SyncNotice`: sent from the kernel's main thread after a Python API call, so a
  host that drops background-thread messages still learns that work started.
- :class:`Reply`: the answer to every intent, ``{"id", "kind": "<kind>-response", "ok",
  "error"?, "seq", "busy"}``, errors included. ``resync`` replies carry the whole ``state``,
  ``history`` replies a page of older messages.

Every state message carries ``seq``: trait batches and deltas each take the next number;
notices and replies carry the last number sent. A front end that sees a gap, that
(re)connects, or that hears nothing for :data:`RESYNC_IDLE_MS` while ``busy`` sends
``resync``, and the kernel answers from its main thread.

**Intents** (front end to kernel) are ``{"id", "kind", ...fields}``; fields typed
:data:`Text` may be at most :data:`MAX_TEXT_BYTES` (UTF-8), fields typed :data:`Id` (and
``id``) at most :data:`MAX_ID_CHARS` characters. Larger ones are refused and change nothing.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from chatwidget.engine.types import GenerationSettings
from chatwidget.session.settings import SETTING_BOUNDS

#: A free-text field of an intent: at most MAX_TEXT_BYTES.
Text = Annotated[str, "text"]
#: An identifier field of an intent: at most MAX_ID_CHARS.
Id = Annotated[str, "id"]

#: Longest text an intent may carry, in UTF-8 bytes (1 MB).
MAX_TEXT_BYTES = 1_000_000
#: Longest id an intent may carry (request ids, conversation ids, repo ids).
MAX_ID_CHARS = 128
#: Messages per page of a conversation: trait ``transcript`` holds the last, partly filled
#: page; older pages come through ``history`` requests and change only with ``epoch``.
PAGE_SIZE = 10
#: Most messages one ``history`` reply carries.
MAX_HISTORY_LIMIT = 500
#: A front end that hears nothing this long while ``busy`` asks for a snapshot.
RESYNC_IDLE_MS = 1000
#: How long a front end waits for a missing ``seq`` (messages may be handled out of order)
#: before it asks for a snapshot.
GAP_GRACE_MS = 300
#: A ``resync`` with no answer after this long does not hold back the next one.
RESYNC_RETRY_MS = 5000

StateLabel = Literal[
    "Not downloaded",
    "Downloaded",
    "Queued",
    "Downloading",
    "Compiling",
    "Connecting",
    "Ready",
    "Failed",
    "Canceled",
]
Role = Literal["user", "assistant", "system"]
MessageStatus = Literal["done", "streaming", "stopped", "error", "interrupted"]
ExportFormat = Literal["markdown", "json"]


class FitOption(TypedDict):
    """One precision option's verdict: ``verdict`` is gpu / partial / cpu / none, ``label``
    the words ("Fits on GPU", "Partial offload", "CPU only", "Won't fit")."""

    option: str
    verdict: str
    label: str
    required_bytes: int
    budget_bytes: int | None
    note: str


class AbsentFitOption(TypedDict):
    """A precision option this machine or checkpoint cannot offer, and why."""

    option: str
    reason: str


class FitInfo(TypedDict):
    """Will it fit, per precision option, before download. ``status``: pending (being
    estimated), ready, or unavailable (``note`` says why)."""

    status: Literal["pending", "ready", "unavailable"]
    context_tokens: int
    source: str
    options: list[FitOption]
    absent: list[AbsentFitOption]
    note: str | None


class Residency(TypedDict):
    """Where a model is while loaded, and what unloading it did.

    ``placement``: "GPU 0", "CPU", "disk offload" (from ``hf_device_map``); ``memory_bytes``:
    what the memory budget counts for it; ``can_unload``: it is loaded and may be unloaded;
    ``freed_bytes``: what the last unload freed (shown until it loads again); ``note``: a
    status text ("waiting for the reply on X to finish", "Waiting for another download")."""

    placement: list[str]
    memory_bytes: int | None
    can_unload: bool
    freed_bytes: int | None
    note: str | None


class ModelRow(TypedDict):
    """One catalog entry, trait ``models``; ``precision`` is the option chosen for it
    (``auto``, ``bfloat16``, ``float16``, ``float32``, ``8bit``, ``4bit``)."""

    repo_id: str
    name: str
    params: str
    size_bytes: int | None
    state: StateLabel
    error: str | None
    can_cancel: bool
    can_retry: bool
    action: str | None
    residency: Residency
    precision: str
    fit: FitInfo | None
    server: str | None  # the server of a remote model ("gpu" for "gpu:org/name"), else None


class MessageRow(TypedDict):
    """One chat message; ``chunks``: how many streamed chunks ``content`` holds; ``note``: a
    status while it streams ("Loading model…" while its asleep model loads again);
    ``version`` (from 0) of ``versions``: which of its versions (regenerated replies,
    edited messages) the active branch shows."""

    id: str
    role: Role
    content: str
    status: MessageStatus
    model: str | None
    new_tokens: int | None
    tokens_per_s: float | None
    error: str | None
    chunks: int
    version: NotRequired[int]  # the kernel always sends both; 0 / 1 when absent
    versions: NotRequired[int]
    note: NotRequired[str | None]


class ConversationRow(TypedDict):
    """One conversation, trait ``conversations``."""

    id: str
    title: str
    active_model: str | None
    requested_model: str | None


class Transcript(TypedDict):
    """Trait ``transcript``: messages ``start`` to ``total`` of the active conversation."""

    conversation_id: str
    epoch: int
    start: int
    total: int
    messages: list[MessageRow]


class DownloadRow(TypedDict):
    """One row of the download manager, trait ``downloads``."""

    repo_id: str
    state: StateLabel
    bytes_done: int
    bytes_total: int
    speed_bps: float
    eta_s: float | None
    error: str | None
    file: str
    can_cancel: bool
    can_retry: bool
    action: str | None
    residency: Residency
    server: str | None  # a remote model's server: the row shows it instead of bytes


class SettingsDict(TypedDict):
    """Generation settings, trait ``settings``."""

    system_prompt: str
    max_new_tokens: int
    temperature: float
    top_p: float
    do_sample: bool


class SettingsPatch(TypedDict, total=False):
    """A partial settings change (intent ``set_settings``)."""

    system_prompt: Text
    max_new_tokens: int
    temperature: float
    top_p: float
    do_sample: bool


class SwitchNotice(TypedDict):
    """Trait ``last_switch``: the latest auto-switch; ``seq`` grows by one each time."""

    seq: int
    conversation_id: str
    repo_id: str


class ErrorNotice(TypedDict):
    """One entry of trait ``errors``: a failure shown in the widget."""

    seq: int
    message: str


ServerStatus = Literal["listing", "ready", "failed"]


class RemoteNoticeRow(TypedDict):
    """A wait the user should see while it lasts (a 429 answered with Retry-After)."""

    seq: int
    model: str  # the model key, or "{server}:" while listing the server's models
    phase: Literal["connecting", "reply", "listing"]
    message: str
    retry_in_s: float


class ServerRow(TypedDict):
    """One OpenAI-compatible server this widget added, trait ``servers``. Never its key."""

    name: str
    base_url: str
    status: ServerStatus  # listing its models, listed (ready), or the listing failed
    error: str | None
    action: str | None
    can_retry: bool
    has_api_key: bool
    models: list[str]  # the keys of the models it lists ("gpu:org/name")
    notice: RemoteNoticeRow | None


class SettingBounds(TypedDict):
    """Range of a numeric setting and the step the UI offers."""

    min: float
    max: float
    step: float
    integer: bool


class StorageWarning(TypedDict):
    """What stops the history file from being saved (the chat goes on in memory)."""

    kind: str
    message: str
    pending_writes: int
    moved_to: str | None


class StorageState(TypedDict):
    """Trait ``storage``: the history file (None in memory), the workspace, the standing
    warning, and one-off notices (a damaged file moved aside)."""

    path: str | None
    workspace: str
    warning: StorageWarning | None
    notices: list[str]


class ExportFile(TypedDict):
    """An ``export`` reply's file, for the browser to download."""

    filename: str
    mime: str
    text: str


class WidgetState(TypedDict):
    """Synced traits, all written by the kernel."""

    seq: int
    busy: bool
    models: list[ModelRow]
    conversations: list[ConversationRow]
    active_conversation: str
    transcript: Transcript
    downloads: list[DownloadRow]
    settings: SettingsDict
    generating: bool
    last_switch: SwitchNotice | None
    download_focus_seq: int
    errors: list[ErrorNotice]
    storage: StorageState
    servers: list[ServerRow]


CompareMode = Literal["sequential", "concurrent"]
CompareStatus = Literal["waiting", "streaming", "done", "stopped", "failed"]


class CompareColumnRow(TypedDict):
    """A Compare column; ``model`` None while blind, ``chunks`` as in MessageRow."""

    index: int
    label: str
    model: str | None
    state: StateLabel
    note: str | None
    status: CompareStatus
    text: str
    chunks: int
    time_to_first_token_s: float | None
    tokens_per_s: float | None
    new_tokens: int | None
    error: str | None


class CompareState(TypedDict):
    """Trait ``compare_state`` (written by the compare publisher, outside ``seq``)."""

    id: str
    version: int  # grows with every change of this comparison (newer state wins)
    prompt: str
    blind: bool
    mode: CompareMode | None
    reason: str | None
    done: bool
    vote: int | None
    saved: bool
    columns: list[CompareColumnRow]


# --------------------------------------------------------------------- kernel messages


class Delta(TypedDict):
    """Streamed text: chunk ``index`` of message ``message_id``."""

    kind: Literal["delta"]
    seq: int
    conversation_id: str
    message_id: str
    index: int
    text: str


class CompareDelta(TypedDict):
    """Streamed text of a Compare column: chunk ``index`` of column ``column``."""

    kind: Literal["compare_delta"]
    compare_id: str
    column: int
    index: int
    text: str


class SyncNotice(TypedDict):
    """From the main thread after a Python API call: the last ``seq`` sent, and ``busy``."""

    kind: Literal["sync"]
    seq: int
    busy: bool


class Reply(TypedDict):
    """The answer to every intent."""

    id: str
    kind: str
    ok: bool
    error: NotRequired[str]
    seq: int
    busy: bool
    state: NotRequired[WidgetState]
    page: NotRequired[Transcript]
    file: NotRequired[ExportFile]
    export: NotRequired[str]
    compare: NotRequired[CompareState | None]


# --------------------------------------------------------------------- intents


class SendIntent(TypedDict):
    kind: Literal["send"]
    text: Text


class StopIntent(TypedDict):
    kind: Literal["stop"]


class RegenerateIntent(TypedDict):
    kind: Literal["regenerate"]


class SelectModelIntent(TypedDict):
    kind: Literal["select_model"]
    repo_id: Id


class AddModelIntent(TypedDict):
    kind: Literal["add_model"]
    repo_id: Id


class CancelDownloadIntent(TypedDict):
    kind: Literal["cancel_download"]
    repo_id: Id


class RetryDownloadIntent(TypedDict):
    kind: Literal["retry_download"]
    repo_id: Id


class UnloadModelIntent(TypedDict):
    """Unload a loaded model (answered after it is unloaded; the row shows the freed bytes)."""

    kind: Literal["unload_model"]
    repo_id: Id


class FreeMemoryIntent(TypedDict):
    """Unload every idle loaded model, then retry ``repo_id`` (a "won't fit" failure)."""

    kind: Literal["free_memory"]
    repo_id: Id


class SetTokenIntent(TypedDict):
    """A Hugging Face token for this widget's downloads, sent once: the kernel keeps it in
    the downloader only (never in a trait, event, log or reply) and retries gated models."""

    kind: Literal["set_token"]
    token: Text


class SetPrecisionIntent(TypedDict):
    """Load ``repo_id`` in precision ``option`` from now on (remembered per model)."""

    kind: Literal["set_precision"]
    repo_id: Id
    option: Id


class EstimateFitIntent(TypedDict):
    """Estimate whether the catalog's models fit, per precision (results come in rows)."""

    kind: Literal["estimate_fit"]


class NewConversationIntent(TypedDict):
    kind: Literal["new_conversation"]


class SwitchConversationIntent(TypedDict):
    kind: Literal["switch_conversation"]
    conversation_id: Id


class RenameConversationIntent(TypedDict):
    kind: Literal["rename_conversation"]
    conversation_id: Id
    title: Text


class DeleteConversationIntent(TypedDict):
    kind: Literal["delete_conversation"]
    conversation_id: Id


class SetSettingsIntent(TypedDict):
    kind: Literal["set_settings"]
    settings: SettingsPatch


class EditIntent(TypedDict):
    """Replace user message ``message_id`` with a new version and reply to it."""

    kind: Literal["edit"]
    message_id: Id
    text: Text


class SelectVersionIntent(TypedDict):
    """Show version ``index`` (from 0) of message ``message_id``."""

    kind: Literal["select_version"]
    message_id: Id
    index: int


class ExportIntent(TypedDict):
    """Ask for a conversation as a file (answered with ``file``)."""

    kind: Literal["export"]
    conversation_id: Id
    format: ExportFormat


class ImportIntent(TypedDict):
    """A new conversation from an exported file's text (JSON or Markdown)."""

    kind: Literal["import_conversation"]
    text: Text


class AddServerIntent(TypedDict):
    """Add an OpenAI-compatible server; ``api_key`` is "" for none. The key is sent once,
    held by the kernel only, and never sent back."""

    kind: Literal["add_server"]
    name: Id
    base_url: Text
    api_key: Text


class RemoveServerIntent(TypedDict):
    kind: Literal["remove_server"]
    name: Id


class RefreshServerIntent(TypedDict):
    """List a server's models again (after a failed listing)."""

    kind: Literal["refresh_server"]
    name: Id


class ResyncIntent(TypedDict):
    """Ask for a snapshot of the whole state (answered with ``state``)."""

    kind: Literal["resync"]


class HistoryIntent(TypedDict):
    """Ask for up to ``limit`` messages before index ``before`` (answered with ``page``)."""

    kind: Literal["history"]
    conversation_id: Id
    before: int
    limit: int


class CompareIntent(TypedDict):
    """Answer ``prompt`` with 2-3 ``models`` side by side (``blind``: names hidden)."""

    kind: Literal["compare"]
    prompt: Text
    models: list[Id]
    blind: bool


class CompareVoteIntent(TypedDict):
    """The reply in ``column`` (0 = first shown) is the better one."""

    kind: Literal["compare_vote"]
    column: int


class CompareStopIntent(TypedDict):
    kind: Literal["compare_stop"]


class CompareSyncIntent(TypedDict):
    """Ask for the Compare view's state (answered with ``compare``, from the kernel's thread:
    hosts that drop background-thread messages still show the comparison)."""

    kind: Literal["compare_sync"]


class CompareExportIntent(TypedDict):
    """The current comparison as ``format`` "markdown" or "json" (answered with ``export``)."""

    kind: Literal["compare_export"]
    format: Id


INTENTS: tuple[type, ...] = (
    SendIntent,
    StopIntent,
    RegenerateIntent,
    SelectModelIntent,
    AddModelIntent,
    CancelDownloadIntent,
    RetryDownloadIntent,
    UnloadModelIntent,
    FreeMemoryIntent,
    SetTokenIntent,
    SetPrecisionIntent,
    EstimateFitIntent,
    NewConversationIntent,
    SwitchConversationIntent,
    RenameConversationIntent,
    DeleteConversationIntent,
    SetSettingsIntent,
    EditIntent,
    SelectVersionIntent,
    ExportIntent,
    ImportIntent,
    AddServerIntent,
    RemoveServerIntent,
    RefreshServerIntent,
    ResyncIntent,
    HistoryIntent,
    CompareIntent,
    CompareVoteIntent,
    CompareStopIntent,
    CompareSyncIntent,
    CompareExportIntent,
)


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of an intent as the kernel checks it."""

    name: str
    type: type
    limit: Literal["text", "id", None]


def _fields(intent: type) -> tuple[str, tuple[Field, ...]]:
    hints = typing.get_type_hints(intent, include_extras=True)
    kind = typing.get_args(hints.pop("kind"))[0]
    fields = []
    for name, hint in hints.items():
        base, limit = (
            typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint, None)
        )
        if typing.get_origin(base) is Literal:  # a choice of strings: checked where used
            base, limit = str, "id"
        if typing.get_origin(base) is list:  # list[Id]: a list of ids
            (item,) = typing.get_args(base)
            limit = typing.get_args(item)[1] if typing.get_origin(item) is Annotated else None
            base = list
        fields.append(Field(name, dict if typing.is_typeddict(base) else base, limit))
    return kind, tuple(fields)


#: Fields (beyond ``id`` and ``kind``) of each intent kind, with their types and limits.
INTENT_FIELDS: dict[str, tuple[Field, ...]] = dict(_fields(i) for i in INTENTS)

#: Settings defaults, from :class:`GenerationSettings` (the front end shows them too).
DEFAULT_SETTINGS: SettingsDict = typing.cast(
    "SettingsDict", dataclasses.asdict(GenerationSettings())
)
#: Numeric settings' ranges, from :data:`chatwidget.session.settings.SETTING_BOUNDS`.
SETTINGS_BOUNDS: dict[str, SettingBounds] = {
    name: {"min": b.min, "max": b.max, "step": b.step, "integer": b.integer}
    for name, b in SETTING_BOUNDS.items()
}

#: Constants the front end gets, in this order.
CONSTANTS: dict[str, Any] = {
    "MAX_TEXT_BYTES": MAX_TEXT_BYTES,
    "MAX_ID_CHARS": MAX_ID_CHARS,
    "PAGE_SIZE": PAGE_SIZE,
    "MAX_HISTORY_LIMIT": MAX_HISTORY_LIMIT,
    "RESYNC_IDLE_MS": RESYNC_IDLE_MS,
    "GAP_GRACE_MS": GAP_GRACE_MS,
    "RESYNC_RETRY_MS": RESYNC_RETRY_MS,
}
