// Generated from chatwidget/widget/protocol.py by `python -m chatwidget.widget.tsgen`.
// Do not edit: change the Python and regenerate (a test checks the two agree).

export type StateLabel =
  | "Not downloaded"
  | "Downloaded"
  | "Queued"
  | "Downloading"
  | "Compiling"
  | "Connecting"
  | "Ready"
  | "Failed"
  | "Canceled";

export type Role = "user" | "assistant" | "system";

export type MessageStatus = "done" | "streaming" | "stopped" | "error" | "interrupted";

export type ExportFormat = "markdown" | "json";

export type CompareMode = "sequential" | "concurrent";

export type CompareStatus = "waiting" | "streaming" | "done" | "stopped" | "failed";

export type ServerStatus = "listing" | "ready" | "failed";

/** One precision option's verdict: ``verdict`` is gpu / partial / cpu / none, ``label`` the words ("Fits on GPU", "Partial offload", "CPU only", "Won't fit"). */
export interface FitOption {
  option: string;
  verdict: string;
  label: string;
  required_bytes: number;
  budget_bytes: number | null;
  note: string;
}

/** A precision option this machine or checkpoint cannot offer, and why. */
export interface AbsentFitOption {
  option: string;
  reason: string;
}

/** Will it fit, per precision option, before download. ``status``: pending (being estimated), ready, or unavailable (``note`` says why). */
export interface FitInfo {
  status: "pending" | "ready" | "unavailable";
  context_tokens: number;
  source: string;
  options: FitOption[];
  absent: AbsentFitOption[];
  note: string | null;
}

/** Where a model is while loaded, and what unloading it did. */
export interface Residency {
  placement: string[];
  memory_bytes: number | null;
  can_unload: boolean;
  freed_bytes: number | null;
  note: string | null;
}

/** One catalog entry, trait ``models``; ``precision`` is the option chosen for it (``auto``, ``bfloat16``, ``float16``, ``float32``, ``8bit``, ``4bit``). */
export interface ModelRow {
  repo_id: string;
  name: string;
  params: string;
  size_bytes: number | null;
  state: StateLabel;
  error: string | null;
  can_cancel: boolean;
  can_retry: boolean;
  action: string | null;
  residency: Residency;
  precision: string;
  fit: FitInfo | null;
  server: string | null;
}

/** One chat message; ``chunks``: how many streamed chunks ``content`` holds; ``note``: a status while it streams ("Loading model…" while its asleep model loads again); ``version`` (from 0) of ``versions``: which of its versions (regenerated replies, edited messages) the active branch shows. */
export interface MessageRow {
  id: string;
  role: Role;
  content: string;
  status: MessageStatus;
  model: string | null;
  new_tokens: number | null;
  tokens_per_s: number | null;
  error: string | null;
  chunks: number;
  version?: number;
  versions?: number;
  note?: string | null;
}

/** One conversation, trait ``conversations``. */
export interface ConversationRow {
  id: string;
  title: string;
  active_model: string | null;
  requested_model: string | null;
}

/** Trait ``transcript``: messages ``start`` to ``total`` of the active conversation. */
export interface Transcript {
  conversation_id: string;
  epoch: number;
  start: number;
  total: number;
  messages: MessageRow[];
}

/** One row of the download manager, trait ``downloads``. */
export interface DownloadRow {
  repo_id: string;
  state: StateLabel;
  bytes_done: number;
  bytes_total: number;
  speed_bps: number;
  eta_s: number | null;
  error: string | null;
  file: string;
  can_cancel: boolean;
  can_retry: boolean;
  action: string | null;
  residency: Residency;
  server: string | null;
}

/** Generation settings, trait ``settings``. */
export interface SettingsDict {
  system_prompt: string;
  max_new_tokens: number;
  temperature: number;
  top_p: number;
  do_sample: boolean;
}

/** A partial settings change (intent ``set_settings``). */
export interface SettingsPatch {
  system_prompt?: string;
  max_new_tokens?: number;
  temperature?: number;
  top_p?: number;
  do_sample?: boolean;
}

/** Trait ``last_switch``: the latest auto-switch; ``seq`` grows by one each time. */
export interface SwitchNotice {
  seq: number;
  conversation_id: string;
  repo_id: string;
}

/** One entry of trait ``errors``: a failure shown in the widget. */
export interface ErrorNotice {
  seq: number;
  message: string;
}

/** A wait the user should see while it lasts (a 429 answered with Retry-After). */
export interface RemoteNoticeRow {
  seq: number;
  model: string;
  phase: "connecting" | "reply" | "listing";
  message: string;
  retry_in_s: number;
}

/** One OpenAI-compatible server this widget added, trait ``servers``. Never its key. */
export interface ServerRow {
  name: string;
  base_url: string;
  status: ServerStatus;
  error: string | null;
  action: string | null;
  can_retry: boolean;
  has_api_key: boolean;
  models: string[];
  notice: RemoteNoticeRow | null;
}

/** Range of a numeric setting and the step the UI offers. */
export interface SettingBounds {
  min: number;
  max: number;
  step: number;
  integer: boolean;
}

/** What stops the history file from being saved (the chat goes on in memory). */
export interface StorageWarning {
  kind: string;
  message: string;
  pending_writes: number;
  moved_to: string | null;
}

/** Trait ``storage``: the history file (None in memory), the workspace, the standing warning, and one-off notices (a damaged file moved aside). */
export interface StorageState {
  path: string | null;
  workspace: string;
  warning: StorageWarning | null;
  notices: string[];
}

/** An ``export`` reply's file, for the browser to download. */
export interface ExportFile {
  filename: string;
  mime: string;
  text: string;
}

/** Synced traits, all written by the kernel. */
export interface WidgetState {
  seq: number;
  busy: boolean;
  models: ModelRow[];
  conversations: ConversationRow[];
  active_conversation: string;
  transcript: Transcript;
  downloads: DownloadRow[];
  settings: SettingsDict;
  generating: boolean;
  last_switch: SwitchNotice | null;
  download_focus_seq: number;
  errors: ErrorNotice[];
  storage: StorageState;
  servers: ServerRow[];
}

/** A Compare column; ``model`` None while blind, ``chunks`` as in MessageRow. */
export interface CompareColumnRow {
  index: number;
  label: string;
  model: string | null;
  state: StateLabel;
  note: string | null;
  status: CompareStatus;
  text: string;
  chunks: number;
  time_to_first_token_s: number | null;
  tokens_per_s: number | null;
  new_tokens: number | null;
  error: string | null;
}

/** Trait ``compare_state`` (written by the compare publisher, outside ``seq``). */
export interface CompareState {
  id: string;
  version: number;
  prompt: string;
  blind: boolean;
  mode: CompareMode | null;
  reason: string | null;
  done: boolean;
  vote: number | null;
  saved: boolean;
  columns: CompareColumnRow[];
}

/** Streamed text: chunk ``index`` of message ``message_id``. */
export interface Delta {
  kind: "delta";
  seq: number;
  conversation_id: string;
  message_id: string;
  index: number;
  text: string;
}

/** Streamed text of a Compare column: chunk ``index`` of column ``column``. */
export interface CompareDelta {
  kind: "compare_delta";
  compare_id: string;
  column: number;
  index: number;
  text: string;
}

/** From the main thread after a Python API call: the last ``seq`` sent, and ``busy``. */
export interface SyncNotice {
  kind: "sync";
  seq: number;
  busy: boolean;
}

/** The answer to every intent. */
export interface Reply {
  id: string;
  kind: string;
  ok: boolean;
  error?: string;
  seq: number;
  busy: boolean;
  state?: WidgetState;
  page?: Transcript;
  file?: ExportFile;
  export?: string;
  compare?: CompareState | null;
}

/** What the front end may ask; the kernel answers each with a Reply. */

export type Intent =
  | { kind: "send"; text: string }
  | { kind: "stop" }
  | { kind: "regenerate" }
  | { kind: "select_model"; repo_id: string }
  | { kind: "add_model"; repo_id: string }
  | { kind: "cancel_download"; repo_id: string }
  | { kind: "retry_download"; repo_id: string }
  | { kind: "unload_model"; repo_id: string }
  | { kind: "free_memory"; repo_id: string }
  | { kind: "set_token"; token: string }
  | { kind: "set_precision"; repo_id: string; option: string }
  | { kind: "estimate_fit" }
  | { kind: "new_conversation" }
  | { kind: "switch_conversation"; conversation_id: string }
  | { kind: "rename_conversation"; conversation_id: string; title: string }
  | { kind: "delete_conversation"; conversation_id: string }
  | { kind: "set_settings"; settings: SettingsPatch }
  | { kind: "edit"; message_id: string; text: string }
  | { kind: "select_version"; message_id: string; index: number }
  | { kind: "export"; conversation_id: string; format: ExportFormat }
  | { kind: "import_conversation"; text: string }
  | { kind: "add_server"; name: string; base_url: string; api_key: string }
  | { kind: "remove_server"; name: string }
  | { kind: "refresh_server"; name: string }
  | { kind: "resync" }
  | { kind: "history"; conversation_id: string; before: number; limit: number }
  | { kind: "compare"; prompt: string; models: string[]; blind: boolean }
  | { kind: "compare_vote"; column: number }
  | { kind: "compare_stop" }
  | { kind: "compare_sync" }
  | { kind: "compare_export"; format: string };

export type Request = Intent & { id: string };

export type KernelMessage = Delta | SyncNotice | Reply;

export const STATE_KEYS: (keyof WidgetState)[] = [
  "seq",
  "busy",
  "models",
  "conversations",
  "active_conversation",
  "transcript",
  "downloads",
  "settings",
  "generating",
  "last_switch",
  "download_focus_seq",
  "errors",
  "storage",
  "servers",
];

export const MAX_TEXT_BYTES = 1000000;
export const MAX_ID_CHARS = 128;
export const PAGE_SIZE = 10;
export const MAX_HISTORY_LIMIT = 500;
export const RESYNC_IDLE_MS = 1000;
export const GAP_GRACE_MS = 300;
export const RESYNC_RETRY_MS = 5000;

export const DEFAULT_SETTINGS: SettingsDict = {
  system_prompt: "",
  max_new_tokens: 256,
  temperature: 0.7,
  top_p: 0.95,
  do_sample: false,
};

export const SETTINGS_BOUNDS: Record<string, SettingBounds> = {
  max_new_tokens: { min: 1, max: 32768, step: 1, integer: true },
  temperature: { min: 0, max: 5, step: 0.05, integer: false },
  top_p: { min: 0.01, max: 1, step: 0.01, integer: false },
};
