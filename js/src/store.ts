// Read-only access to the kernel's state as this view holds it (traits, snapshots and
// deltas, merged by SyncState), listener bookkeeping for cleanup, and small derived values
// several panels need.

import type { AnyModel } from "@anywidget/types";
import { percent } from "./format";
import {
  DEFAULT_SETTINGS,
  type ConversationRow,
  type DownloadRow,
  type ModelRow,
  type ServerRow,
  type SettingsDict,
  type StorageState,
  type WidgetState,
} from "./protocol";
import type { SyncState } from "./sync";
import type { TranscriptView } from "./transcript";

export type WidgetModel = AnyModel<WidgetState>;

/** Typed getters with safe defaults for state that has not arrived yet. */
export class Store {
  constructor(readonly sync: SyncState) {}

  get models(): ModelRow[] {
    return this.sync.get("models") ?? [];
  }
  get conversations(): ConversationRow[] {
    return this.sync.get("conversations") ?? [];
  }
  get activeConversationId(): string {
    return this.sync.get("active_conversation") ?? "";
  }
  get downloads(): DownloadRow[] {
    return this.sync.get("downloads") ?? [];
  }
  get settings(): SettingsDict {
    return { ...DEFAULT_SETTINGS, ...(this.sync.get("settings") ?? {}) };
  }
  /** The history file's state (null until it arrives). */
  get storage(): StorageState | null {
    return this.sync.get("storage") ?? null;
  }
  /** OpenAI-compatible servers added to this widget (never their keys). */
  get servers(): ServerRow[] {
    return this.sync.get("servers") ?? [];
  }
  get generating(): boolean {
    return Boolean(this.sync.get("generating"));
  }
  /** The active conversation's messages (pages loaded so far, streamed text). */
  get transcript(): TranscriptView {
    return this.sync.transcript;
  }

  /** The active conversation, or the first one, or null when there is none. */
  get activeConversation(): ConversationRow | null {
    const all = this.conversations;
    return all.find((c) => c.id === this.activeConversationId) ?? all[0] ?? null;
  }

  modelRow(repoId: string | null): ModelRow | undefined {
    return repoId === null ? undefined : this.models.find((m) => m.repo_id === repoId);
  }

  download(repoId: string | null): DownloadRow | undefined {
    return repoId === null ? undefined : this.downloads.find((d) => d.repo_id === repoId);
  }

  /** Display name of a model: its catalog name, else its repo id. */
  displayName(repoId: string): string {
    return this.modelRow(repoId)?.name || repoId;
  }

  /**
   * The model the active conversation waits for, and a label such as
   * "Waiting for Qwen2.5 0.5B Instruct (Downloading 45%)"; null when it waits for nothing.
   */
  pending(): { repoId: string; label: string } | null {
    const conv = this.activeConversation;
    const target = conv?.requested_model ?? null;
    if (!conv || target === null || target === conv.active_model) return null;
    const row = this.download(target);
    const state = row?.state ?? this.modelRow(target)?.state ?? "Queued";
    let detail: string = state;
    if (row && state === "Downloading") {
      detail = `Downloading ${percent(row.bytes_done, row.bytes_total)}%`;
    } else if (row && state === "Failed" && row.error) {
      detail = `Failed: ${row.error}`;
    }
    return { repoId: target, label: `Waiting for ${this.displayName(target)} (${detail})` };
  }
}

/** Records model listeners so that one call removes exactly those it added. */
/** Same shape as AnyModel's event handlers. */
type Handler = (...args: any[]) => void;

export class Listeners {
  private readonly added: Array<[string, Handler]> = [];

  constructor(private readonly model: WidgetModel) {}

  on(event: string, callback: Handler): void {
    this.model.on(event, callback);
    this.added.push([event, callback]);
  }

  dispose(): void {
    for (const [event, callback] of this.added.splice(0)) this.model.off(event, callback);
  }
}
