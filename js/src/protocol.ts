// Mirror of chatwidget/widget/protocol.py: synced trait shapes and custom messages.

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

export interface ModelRow {
  repo_id: string;
  name: string;
  params: string;
  size_bytes: number | null;
  state: StateLabel;
  error: string | null;
}

export interface MessageRow {
  id: string;
  role: "user" | "assistant" | "system";
  content: string;
  status: "done" | "streaming" | "stopped" | "error";
  model: string | null;
  new_tokens: number | null;
  tokens_per_s: number | null;
  error: string | null;
}

export interface ConversationRow {
  id: string;
  title: string;
  active_model: string | null;
  requested_model: string | null;
  messages: MessageRow[];
}

export interface DownloadRow {
  repo_id: string;
  state: StateLabel;
  bytes_done: number;
  bytes_total: number;
  speed_bps: number;
  eta_s: number | null;
  error: string | null;
  file: string;
}

export interface SettingsDict {
  system_prompt: string;
  max_new_tokens: number;
  temperature: number;
  top_p: number;
  do_sample: boolean;
}

export interface SwitchNotice {
  seq: number;
  conversation_id: string;
  repo_id: string;
}

export interface ErrorNotice {
  seq: number;
  message: string;
}

/** Synced traits, all written by the kernel. */
export interface WidgetState {
  models: ModelRow[];
  conversations: ConversationRow[];
  active_conversation: string;
  downloads: DownloadRow[];
  settings: SettingsDict;
  generating: boolean;
  last_switch: SwitchNotice | null;
  download_focus_seq: number;
  errors: ErrorNotice[];
}

export type Intent =
  | { kind: "send"; text: string }
  | { kind: "stop" }
  | { kind: "regenerate" }
  | { kind: "select_model"; repo_id: string }
  | { kind: "add_model"; repo_id: string }
  | { kind: "cancel_download"; repo_id: string }
  | { kind: "retry_download"; repo_id: string }
  | { kind: "new_conversation" }
  | { kind: "switch_conversation"; conversation_id: string }
  | { kind: "rename_conversation"; conversation_id: string; title: string }
  | { kind: "delete_conversation"; conversation_id: string }
  | { kind: "set_settings"; settings: Partial<SettingsDict> };

export type Request = Intent & { id: string };

export interface Reply {
  id: string;
  kind: string; // "<kind>-response"
  ok: boolean;
  error?: string;
}
