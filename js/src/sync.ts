// Resilient sync: this view's copy of the kernel's state, kept whole even when messages are
// lost or come out of order.
//
// State comes from three places: trait batches (each carries `seq`), `resync` snapshots
// (the whole state at a `seq`), and deltas (streamed text, each with the next `seq`). Replies
// and `sync` notices tell the last `seq` sent and whether work is in flight (`busy`).
// `SeqMonitor` notices a gap (a `seq` missing for GAP_GRACE_MS) and silence while busy (no
// state message for RESYNC_IDLE_MS) and asks for a snapshot; one is also asked for when the
// view connects. The kernel answers from its main thread, which hosts such as Colab deliver
// even when they drop updates sent from background threads.

import {
  GAP_GRACE_MS,
  RESYNC_IDLE_MS,
  RESYNC_RETRY_MS,
  STATE_KEYS,
  type Delta,
  type Reply,
  type WidgetState,
} from "./protocol";
import type { Rpc } from "./rpc";
import type { WidgetModel } from "./store";
import { TranscriptView } from "./transcript";

export type StateKey = keyof WidgetState;
type Timer = ReturnType<typeof setTimeout>;

/** Tracks which `seq` numbers arrived, and asks for a snapshot when one is missing or the
 * kernel goes quiet while busy. */
export class SeqMonitor {
  /** Every `seq` up to this one is accounted for. */
  contiguous: number;
  private readonly ahead = new Set<number>();
  private target = 0;
  private busy = false;
  private gapTimer: Timer | null = null;
  private idleTimer: Timer | null = null;
  private disposed = false;

  constructor(
    initial: number,
    private readonly resync: (reason: "gap" | "idle") => void,
  ) {
    this.contiguous = initial;
  }

  /** A message numbered `seq` arrived (a trait batch or a delta). */
  saw(seq: number): void {
    this.heard();
    if (seq <= this.contiguous) return;
    if (seq === this.contiguous + 1) {
      this.contiguous = seq;
      this.absorb();
    } else {
      this.ahead.add(seq);
    }
    this.check();
  }

  /** The kernel says it has sent everything up to `seq`. */
  expect(seq: number): void {
    this.heard();
    if (seq > this.target) this.target = seq;
    this.check();
  }

  /** A snapshot covers everything up to `seq`. */
  covered(seq: number): void {
    this.heard();
    if (seq > this.contiguous) this.contiguous = seq;
    for (const s of [...this.ahead]) if (s <= this.contiguous) this.ahead.delete(s);
    this.absorb();
    this.check();
  }

  setBusy(busy: boolean): void {
    this.busy = busy;
    this.armIdle();
  }

  /** Whether a snapshot is needed now (a gap older than the grace period is pending). */
  get missing(): boolean {
    return this.ahead.size > 0 || this.target > this.contiguous;
  }

  dispose(): void {
    this.disposed = true;
    if (this.gapTimer !== null) clearTimeout(this.gapTimer);
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.gapTimer = this.idleTimer = null;
  }

  private absorb(): void {
    while (this.ahead.delete(this.contiguous + 1)) this.contiguous += 1;
  }

  private check(): void {
    if (!this.missing) {
      if (this.gapTimer !== null) clearTimeout(this.gapTimer);
      this.gapTimer = null;
      return;
    }
    if (this.gapTimer !== null || this.disposed) return;
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      if (this.missing && !this.disposed) this.resync("gap");
    }, GAP_GRACE_MS);
  }

  private heard(): void {
    this.armIdle();
  }

  private armIdle(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (!this.busy || this.disposed) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.busy && !this.disposed) {
        this.resync("idle");
        this.armIdle(); // keep asking while the kernel stays quiet and busy
      }
    }, RESYNC_IDLE_MS);
  }
}

export type ChangeListener = (keys: ReadonlySet<StateKey>) => void;
export type StreamListener = (messageId: string) => void;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/** This view's copy of the kernel's state. Never writes traits. */
export class SyncState {
  readonly transcript = new TranscriptView();
  readonly monitor: SeqMonitor;
  /** Snapshots applied (for tests and the page's own measurements). */
  resyncs = 0;
  private state: WidgetState;
  private snapshotSeq = -Infinity;
  /** The newest `seq` whose state this view holds (from a batch or a snapshot). */
  private appliedSeq = -Infinity;
  private resyncInFlight = false;
  private resyncTimer: ReturnType<typeof setTimeout> | null = null;
  /** Traits that changed while the model's `seq` was not newer than the last snapshot. */
  private readonly heldBack = new Set<StateKey>();
  private disposed = false;
  private readonly changeListeners = new Set<ChangeListener>();
  private readonly streamListeners = new Set<StreamListener>();
  private readonly handlers: Array<[string, (...args: any[]) => void]> = [];

  constructor(
    private readonly model: WidgetModel,
    private readonly rpc: Rpc,
  ) {
    const initial = Object.fromEntries(STATE_KEYS.map((k) => [k, model.get(k)]));
    this.state = initial as unknown as WidgetState;
    if (this.state.transcript) this.transcript.update(this.state.transcript);
    this.monitor = new SeqMonitor(this.state.seq ?? 0, () => this.requestResync());
    this.monitor.setBusy(Boolean(this.state.busy));
    for (const key of STATE_KEYS) this.listen(`change:${key}`, () => this.traitChanged(key));
    this.listen("msg:custom", (msg: unknown) => this.custom(msg));
  }

  get<K extends StateKey>(key: K): WidgetState[K] {
    return this.state[key];
  }

  onChange(listener: ChangeListener): void {
    this.changeListeners.add(listener);
  }

  onStream(listener: StreamListener): void {
    this.streamListeners.add(listener);
  }

  /**
   * Ask the kernel for the whole state: one request at a time, but a request that gets no
   * answer within RESYNC_RETRY_MS (lost, or the kernel busy running a cell) does not block
   * the next one. A late answer still counts if nothing newer arrived meanwhile.
   */
  requestResync(): void {
    if (this.resyncInFlight || this.disposed) return;
    this.resyncInFlight = true;
    this.resyncTimer = setTimeout(() => {
      this.resyncInFlight = false;
      this.resyncTimer = null;
    }, RESYNC_RETRY_MS);
    void this.rpc.request({ kind: "resync" }, { quiet: true, patient: true }).then((reply) => {
      if (this.resyncTimer !== null) clearTimeout(this.resyncTimer);
      this.resyncTimer = null;
      this.resyncInFlight = false;
      if (!this.disposed && reply.ok && reply.state) this.applySnapshot(reply.state);
    });
  }

  dispose(): void {
    this.disposed = true;
    if (this.resyncTimer !== null) clearTimeout(this.resyncTimer);
    this.monitor.dispose();
    for (const [event, handler] of this.handlers.splice(0)) this.model.off(event, handler);
    this.changeListeners.clear();
    this.streamListeners.clear();
  }

  private listen(event: string, handler: (...args: any[]) => void): void {
    this.model.on(event, handler);
    this.handlers.push([event, handler]);
  }

  /**
   * A trait changed. In Jupyter every trait of a batch is set before the first change event
   * fires, so `seq` is the batch's own number here; other hosts (marimo) may set them one by
   * one, `seq` among them. So a change that looks no newer than the last snapshot is not
   * dropped but kept back, and read again from the model once a newer `seq` arrives (by
   * then the model holds that batch's value, or a later one).
   */
  private traitChanged(key: StateKey): void {
    if (this.disposed) return;
    const seq = this.model.get("seq") ?? 0;
    if (key === "seq") this.monitor.saw(seq);
    if (seq <= this.snapshotSeq) {
      if (key !== "seq") this.heldBack.add(key);
      return; // a snapshot already holds this, or newer
    }
    if (seq > this.appliedSeq) this.appliedSeq = seq;
    const keys = new Set<StateKey>([key, ...this.heldBack]);
    this.heldBack.clear();
    for (const k of keys) this.state = { ...this.state, [k]: this.model.get(k) };
    this.changed(keys);
  }

  private applySnapshot(state: WidgetState): void {
    if (state.seq < this.appliedSeq) return; // a late answer: this view holds newer state
    this.appliedSeq = state.seq;
    this.heldBack.clear();
    this.resyncs += 1;
    this.snapshotSeq = state.seq;
    this.state = { ...state };
    this.monitor.covered(state.seq);
    this.changed(new Set(STATE_KEYS));
  }

  private changed(keys: ReadonlySet<StateKey>): void {
    if (keys.has("transcript") && this.state.transcript) {
      this.transcript.update(this.state.transcript);
    }
    if (keys.has("busy")) this.monitor.setBusy(Boolean(this.state.busy));
    for (const listener of [...this.changeListeners]) listener(keys);
  }

  private custom(msg: unknown): void {
    if (!isRecord(msg) || this.disposed) return;
    if (msg.kind === "delta") {
      const delta = msg as unknown as Delta;
      this.monitor.saw(delta.seq);
      if (this.transcript.delta(delta)) {
        for (const listener of [...this.streamListeners]) listener(delta.message_id);
      }
      return;
    }
    // `sync` notices and every reply (to any view) carry the last seq sent and `busy`.
    if (typeof msg.seq === "number" && (msg.kind === "sync" || isReplyLike(msg))) {
      this.monitor.setBusy(Boolean(msg.busy));
      this.monitor.expect(msg.seq);
    }
  }
}

function isReplyLike(msg: Record<string, unknown>): msg is Record<string, unknown> & Reply {
  return typeof msg.kind === "string" && msg.kind.endsWith("-response");
}
