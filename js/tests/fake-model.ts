// A stand-in for the anywidget model: traits in a plain object, listeners per event,
// and a record of every message the front end sends. Tests play the kernel's part.

import type { AnyModel } from "@anywidget/types";
import render from "../src/index";
import {
  DEFAULT_SETTINGS,
  type ConversationRow,
  type Delta,
  type DownloadRow,
  type MessageRow,
  type ModelRow,
  type Reply,
  type Request,
  type Residency,
  type Transcript,
  type WidgetState,
} from "../src/protocol";

/** Requests the view makes on its own to stay in sync (not the user's intents). */
const SYNC_KINDS = new Set(["resync", "history", "compare_sync", "estimate_fit"]);

// Same handler shape as AnyModel (it takes any arguments).
type Handler = (...args: any[]) => void;

export class FakeModel implements AnyModel<WidgetState> {
  readonly sent: Request[] = [];
  /** Every set() / save_changes() call the front end made (it must make none). */
  readonly writes: string[] = [];
  readonly widget_manager = {} as AnyModel["widget_manager"];
  private readonly handlers = new Map<string, Set<Handler>>();

  constructor(public state: WidgetState) {}

  get<K extends keyof WidgetState>(key: K): WidgetState[K] {
    return this.state[key];
  }
  set<K extends keyof WidgetState>(key: K, value: WidgetState[K]): void {
    this.writes.push(`set:${String(key)}`);
    this.state[key] = value;
  }
  save_changes(): void {
    this.writes.push("save_changes");
  }
  on(event: string, callback: Handler): void {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)!.add(callback);
  }
  off(event?: string | null, callback?: Handler | null): void {
    if (!event) this.handlers.clear();
    else if (!callback) this.handlers.delete(event);
    else this.handlers.get(event)?.delete(callback);
  }
  send(content: Request): void {
    this.sent.push(content);
  }

  /** Kernel side: change traits and fire `change:<trait>` for each, as one batch with the
   * next `seq` (unless `changes` gives one). */
  update(changes: Partial<WidgetState>): void {
    const batch = { seq: this.state.seq + 1, ...changes };
    Object.assign(this.state, batch);
    for (const key of Object.keys(batch)) this.emit(`change:${key}`);
  }

  /** Kernel side: the next `seq` number (as a delta would take it). */
  nextSeq(): number {
    this.state.seq += 1; // not a trait change event: deltas are custom messages
    return this.state.seq;
  }

  /** Kernel side: stream `text` into message `messageId` as its chunk `index`. */
  delta(messageId: string, index: number, text: string, conversationId = "c1"): Delta {
    const delta: Delta = {
      kind: "delta",
      seq: this.nextSeq(),
      conversation_id: conversationId,
      message_id: messageId,
      index,
      text,
    };
    this.emit("msg:custom", delta, []);
    return delta;
  }

  emit(event: string, ...args: unknown[]): void {
    for (const handler of [...(this.handlers.get(event) ?? [])]) handler(...args);
  }

  /** Kernel side: answer the request with `id` (the user's last intent by default). */
  reply(ok: boolean, error?: string, id?: string, extra: Partial<Reply> = {}): Reply {
    const intents = this.intents();
    const request = id ? this.sent.find((r) => r.id === id) : intents[intents.length - 1];
    if (!request) throw new Error("no request to reply to");
    const reply: Reply = {
      id: request.id,
      kind: `${request.kind}-response`,
      ok,
      seq: this.state.seq,
      busy: this.state.busy,
      ...extra,
    };
    if (error !== undefined) reply.error = error;
    this.emit("msg:custom", reply, []);
    return reply;
  }

  /** Kernel side: answer the latest `resync` with the whole state (as it is now). */
  answerResync(state: WidgetState = this.state): Reply {
    const request = [...this.sent].reverse().find((r) => r.kind === "resync");
    if (!request) throw new Error("no resync request to answer");
    return this.reply(true, undefined, request.id, { state: structuredClone(state) });
  }

  /** The user's intents, without the requests the view makes to stay in sync. */
  intents(): Request[] {
    return this.sent.filter((r) => !SYNC_KINDS.has(r.kind));
  }

  /** Number of listeners currently registered. */
  listenerCount(): number {
    let n = 0;
    for (const set of this.handlers.values()) n += set.size;
    return n;
  }

  /** Kinds of the user's intents (sync requests left out). */
  sentKinds(): string[] {
    return this.intents().map((r) => r.kind);
  }
}

export const REPO_A = "HuggingFaceTB/SmolLM2-135M-Instruct";
export const REPO_B = "Qwen/Qwen2.5-0.5B-Instruct";

export function modelRow(overrides: Partial<ModelRow> = {}): ModelRow {
  return {
    repo_id: REPO_A,
    name: "SmolLM2 135M Instruct",
    params: "135M",
    size_bytes: 269_060_552,
    state: "Ready",
    error: null,
    can_cancel: false,
    can_retry: false,
    action: null,
    residency: residency(),
    precision: "auto",
    fit: null,
    server: null,
    ...overrides,
  };
}

export function residency(overrides: Partial<Residency> = {}): Residency {
  return {
    placement: [],
    memory_bytes: null,
    can_unload: false,
    freed_bytes: null,
    note: null,
    ...overrides,
  };
}

export function message(overrides: Partial<MessageRow> = {}): MessageRow {
  return {
    id: "m1",
    role: "user",
    content: "Hello",
    status: "done",
    model: null,
    new_tokens: null,
    tokens_per_s: null,
    error: null,
    chunks: 0,
    version: 0,
    versions: 1,
    ...overrides,
  };
}

export function conversation(overrides: Partial<ConversationRow> = {}): ConversationRow {
  return {
    id: "c1",
    title: "First chat",
    active_model: REPO_A,
    requested_model: REPO_A,
    ...overrides,
  };
}

/** Trait `transcript` holding `messages` of conversation `conversationId` (all of them,
 * unless `start` says the window starts later). */
export function transcript(
  messages: MessageRow[],
  options: { conversationId?: string; start?: number; total?: number; epoch?: number } = {},
): Transcript {
  const start = options.start ?? 0;
  return {
    conversation_id: options.conversationId ?? "c1",
    epoch: options.epoch ?? 0,
    start,
    total: options.total ?? start + messages.length,
    messages,
  };
}

/** The state change that shows `messages` in conversation `conversationId`. */
export function chat(
  messages: MessageRow[],
  options: Parameters<typeof transcript>[1] = {},
): Partial<WidgetState> {
  return { transcript: transcript(messages, options) };
}

/** What the kernel's lifecycle table allows in `state` (the fake plays the kernel here). */
function allowed(state: DownloadRow["state"]): Pick<DownloadRow, "can_cancel" | "can_retry"> {
  return {
    can_cancel: ["Queued", "Downloading", "Compiling", "Connecting"].includes(state),
    can_retry: ["Failed", "Canceled"].includes(state),
  };
}

export function download(overrides: Partial<DownloadRow> = {}): DownloadRow {
  return {
    ...allowed(overrides.state ?? "Downloading"),
    repo_id: REPO_B,
    state: "Downloading",
    bytes_done: 450_000_000,
    bytes_total: 1_000_000_000,
    speed_bps: 4_200_000,
    eta_s: 131,
    error: null,
    file: "model.safetensors",
    action: null,
    residency: residency(),
    server: null,
    ...overrides,
  };
}

export function widgetState(overrides: Partial<WidgetState> = {}): WidgetState {
  return {
    seq: 1,
    busy: false,
    models: [
      modelRow(),
      modelRow({
        repo_id: REPO_B,
        name: "Qwen2.5 0.5B Instruct",
        params: "0.5B",
        size_bytes: 988_097_824,
        state: "Not downloaded",
      }),
    ],
    conversations: [conversation()],
    active_conversation: "c1",
    transcript: transcript([]),
    downloads: [],
    settings: { ...DEFAULT_SETTINGS },
    generating: false,
    last_switch: null,
    download_focus_seq: 0,
    errors: [],
    storage: { path: "/tmp/history.sqlite3", workspace: "default", warning: null, notices: [] },
    servers: [],
    ...overrides,
  };
}

export interface Mounted {
  model: FakeModel;
  el: HTMLElement;
  cleanup: () => void;
}

/** Render the widget into a fresh element attached to the document. */
/** `mount` for a test file: every widget it mounts is cleaned up after its test. */
export function mountPerTest(): typeof mount {
  let current: Mounted | null = null;
  afterEach(() => {
    current?.cleanup();
    current = null;
  });
  return (...args) => {
    current = mount(...args);
    return current;
  };
}

export function mount(overrides: Partial<WidgetState> = {}, model?: FakeModel): Mounted {
  const fake = model ?? new FakeModel(widgetState(overrides));
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = render.render({ model: fake, el });
  return {
    model: fake,
    el,
    cleanup: () => {
      cleanup();
      el.remove();
    },
  };
}

/** Let pending promise callbacks (reply handling) run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 5; i += 1) await Promise.resolve();
}
