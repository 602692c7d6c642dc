// Read-only access to the synced traits (all written by the kernel), listener
// bookkeeping for cleanup, and small derived values several panels need.

import type { AnyModel } from "@anywidget/types";
import { percent } from "./format";
import type { ConversationRow, DownloadRow, ModelRow, SettingsDict, WidgetState } from "./protocol";

export type WidgetModel = AnyModel<WidgetState>;

export const DEFAULT_SETTINGS: SettingsDict = {
  system_prompt: "",
  max_new_tokens: 256,
  temperature: 0.7,
  top_p: 0.9,
  do_sample: true,
};

/** Typed getters with safe defaults for traits that have not arrived yet. */
export class Store {
  constructor(readonly model: WidgetModel) {}

  get models(): ModelRow[] {
    return this.model.get("models") ?? [];
  }
  get conversations(): ConversationRow[] {
    return this.model.get("conversations") ?? [];
  }
  get activeConversationId(): string {
    return this.model.get("active_conversation") ?? "";
  }
  get downloads(): DownloadRow[] {
    return this.model.get("downloads") ?? [];
  }
  get settings(): SettingsDict {
    return { ...DEFAULT_SETTINGS, ...(this.model.get("settings") ?? {}) };
  }
  get generating(): boolean {
    return Boolean(this.model.get("generating"));
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
