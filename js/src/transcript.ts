// The active conversation as this view knows it: the kernel's last page of messages (trait
// `transcript` or a snapshot), older pages fetched with `history` requests, and the text
// streamed into replies since (deltas).
//
// Pages before the window never change while `epoch` stays the same, so they are kept as
// they arrived. A streaming reply's text is its row's `content` (which holds `chunks`
// chunks) plus the deltas numbered from there on; a delta that arrives before its row (the
// kernel's messages can be handled out of order) waits for it.

import type { Delta, MessageRow, Transcript } from "./protocol";

interface Stream {
  text: string;
  next: number; // index of the next chunk to append
  waiting: Map<number, string>; // chunks that came before the ones in between
}

/** Most chunks kept for messages this view has no row for yet. */
const MAX_ORPHAN_CHUNKS = 2000;

export class TranscriptView {
  conversationId = "";
  epoch = 0;
  total = 0;
  /** Index of the first message of the kernel's window. */
  windowStart = 0;
  /** Index of the first message this view has (rows hold `loadedFrom` to `total`). */
  loadedFrom = 0;
  /** How many times the view started over (a reader redraws everything when it grows). */
  resets = 0;
  private rows: MessageRow[] = [];
  private readonly streams = new Map<string, Stream>();
  private readonly orphans = new Map<string, Map<number, string>>();
  private orphanChunks = 0;

  /** Take a transcript from the kernel; returns true when the view starts over (another
   * conversation, older messages changed, or messages came that this view never saw). */
  update(t: Transcript): boolean {
    const hole = t.start > this.loadedFrom + this.rows.length; // messages we never saw
    const reset = t.conversation_id !== this.conversationId || t.epoch !== this.epoch || hole;
    if (reset) {
      this.resets += 1;
      this.conversationId = t.conversation_id;
      this.epoch = t.epoch;
      this.rows = [...t.messages];
      this.loadedFrom = t.start;
      this.streams.clear();
    } else {
      if (t.start < this.loadedFrom) this.loadedFrom = t.start;
      const kept = this.rows.slice(0, Math.max(0, t.start - this.loadedFrom));
      this.rows = [...kept, ...t.messages];
    }
    this.total = t.total;
    this.windowStart = t.start;
    this.reconcileStreams(t.messages);
    return reset;
  }

  /** Add a page of older messages (a `history` reply); false if it does not fit on. */
  prepend(page: Transcript): boolean {
    if (page.conversation_id !== this.conversationId || page.epoch !== this.epoch) return false;
    if (page.start + page.messages.length !== this.loadedFrom) return false;
    this.rows = [...page.messages, ...this.rows];
    this.loadedFrom = page.start;
    return true;
  }

  /** Apply streamed text; returns true when a message's text changed. */
  delta(d: Delta): boolean {
    if (d.conversation_id !== this.conversationId) return false;
    const stream = this.streams.get(d.message_id);
    if (!stream) {
      this.keepOrphan(d);
      return false;
    }
    if (d.index < stream.next) return false; // already in the text
    stream.waiting.set(d.index, d.text);
    return this.drain(stream);
  }

  /** Whether a streaming message misses chunks (a delta was lost). */
  get hasHoles(): boolean {
    for (const stream of this.streams.values()) if (stream.waiting.size) return true;
    return false;
  }

  /** Messages from `loadedFrom` on, streaming ones with their text so far. */
  messages(): MessageRow[] {
    if (this.streams.size === 0) return this.rows;
    return this.rows.map((row) => {
      const stream = this.streams.get(row.id);
      return stream ? { ...row, content: stream.text } : row;
    });
  }

  /** The text streamed so far into message `id`, or null if it is not streaming. */
  streamText(id: string): string | null {
    return this.streams.get(id)?.text ?? null;
  }

  get last(): MessageRow | undefined {
    return this.rows[this.rows.length - 1];
  }

  private reconcileStreams(window: MessageRow[]): void {
    const live = new Set<string>();
    for (const row of window) {
      if (row.status !== "streaming") continue;
      live.add(row.id);
      const old = this.streams.get(row.id);
      if (old && old.next > row.chunks) continue; // this view is ahead of the row
      const waiting = old?.waiting ?? this.orphans.get(row.id) ?? new Map<number, string>();
      const orphaned = this.orphans.get(row.id);
      if (orphaned) {
        this.orphanChunks -= orphaned.size;
        this.orphans.delete(row.id);
      }
      const stream: Stream = { text: row.content, next: row.chunks, waiting };
      for (const index of [...waiting.keys()]) if (index < row.chunks) waiting.delete(index);
      this.drain(stream);
      this.streams.set(row.id, stream);
    }
    for (const id of [...this.streams.keys()]) if (!live.has(id)) this.streams.delete(id);
  }

  private drain(stream: Stream): boolean {
    let changed = false;
    let next = stream.waiting.get(stream.next);
    while (next !== undefined) {
      stream.waiting.delete(stream.next);
      stream.text += next;
      stream.next += 1;
      changed = true;
      next = stream.waiting.get(stream.next);
    }
    return changed;
  }

  private keepOrphan(d: Delta): void {
    if (this.orphanChunks >= MAX_ORPHAN_CHUNKS) return; // a snapshot will bring it
    let chunks = this.orphans.get(d.message_id);
    if (!chunks) {
      chunks = new Map();
      this.orphans.set(d.message_id, chunks);
    }
    if (!chunks.has(d.index)) this.orphanChunks += 1;
    chunks.set(d.index, d.text);
  }
}
