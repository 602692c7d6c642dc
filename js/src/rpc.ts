// Request/reply over anywidget custom messages: every intent gets an id, and the
// kernel answers {id, kind: "<kind>-response", ok, error?, seq, busy}. Replies for other views
// (other ids) are ignored. A reply that is slow to come (the kernel is busy running a
// cell, or gone) is reported after a while, and still accepted when it arrives: the
// request is not treated as failed, so nothing is sent twice.

import type { AnyModel } from "@anywidget/types";
import type { Intent, Reply, WidgetState } from "./protocol";

/** How long to wait for the kernel's reply before telling the user it is slow. */
export const REPLY_TIMEOUT_MS = 30_000;

interface Pending {
  kind: string;
  resolve: (reply: Reply) => void;
  timer: ReturnType<typeof setTimeout>;
}

function isReply(value: unknown): value is Reply {
  if (typeof value !== "object" || value === null) return false;
  const msg = value as Record<string, unknown>;
  return (
    typeof msg.id === "string" &&
    typeof msg.kind === "string" &&
    msg.kind.endsWith("-response") &&
    typeof msg.ok === "boolean"
  );
}

/** Sends intents and matches replies to them by id. */
export class Rpc {
  private readonly pending = new Map<string, Pending>();
  private readonly prefix = `r${Math.random().toString(36).slice(2, 10)}`;
  private counter = 0;
  private disposed = false;
  private readonly onMessage = (msg: unknown): void => this.receive(msg);

  /**
   * @param model the widget model.
   * @param onFailure called with a user-facing message for every failed reply, unless the
   *   caller passed `{ quiet: true }` to handle the failure itself.
   */
  constructor(
    private readonly model: AnyModel<WidgetState>,
    private readonly onFailure: (message: string) => void,
    private readonly timeoutMs: number = REPLY_TIMEOUT_MS,
  ) {
    model.on("msg:custom", this.onMessage);
  }

  /**
   * Send `intent`; resolves with the kernel's reply (never rejects). `quiet`: failures are
   * the caller's to show; `patient`: a slow reply is not reported either (background work).
   */
  request(intent: Intent, options: { quiet?: boolean; patient?: boolean } = {}): Promise<Reply> {
    this.counter += 1;
    const id = `${this.prefix}-${this.counter}`;
    return new Promise<Reply>((resolve) => {
      const finish = (reply: Reply): void => {
        if (!reply.ok && !options.quiet && !this.disposed) {
          this.onFailure(describeFailure(intent.kind, reply));
        }
        resolve(reply);
      };
      const timer = setTimeout(() => {
        if (!this.disposed && !options.patient) {
          this.onFailure(
            `No reply from the kernel to "${intent.kind.replace(/_/g, " ")}" yet: it may be ` +
              "busy running a cell (the request goes through when it is free), or stopped " +
              "(restart it and run the widget's cell again).",
          );
        }
      }, this.timeoutMs);
      this.pending.set(id, { kind: intent.kind, resolve: finish, timer });
      this.model.send({ ...intent, id });
    });
  }

  /** Number of requests still waiting for a reply. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Stop listening; outstanding requests resolve as failed, quietly. */
  dispose(): void {
    this.disposed = true;
    this.model.off("msg:custom", this.onMessage);
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      const closed = { id, kind: `${entry.kind}-response`, ok: false, error: "view closed" };
      entry.resolve({ ...closed, seq: 0, busy: false });
    }
    this.pending.clear();
  }

  private receive(msg: unknown): void {
    if (!isReply(msg)) return;
    const entry = this.pending.get(msg.id);
    if (!entry) return;
    this.pending.delete(msg.id);
    clearTimeout(entry.timer);
    entry.resolve(msg);
  }
}

/** "Could not cancel_download: <error>" in words a user can act on. */
export function describeFailure(kind: string, reply: Reply): string {
  const what = kind.replace(/_/g, " ");
  return `Could not ${what}: ${reply.error ?? "the kernel refused the request"}`;
}
