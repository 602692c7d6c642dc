import "@testing-library/jest-dom/vitest";
import { within } from "@testing-library/dom";
import {
  GAP_GRACE_MS,
  PAGE_SIZE,
  RESYNC_IDLE_MS,
  RESYNC_RETRY_MS,
  type MessageRow,
} from "../src/protocol";
import {
  FakeModel,
  REPO_A,
  chat,
  flush,
  message,
  mount,
  mountPerTest,
  transcript,
  widgetState,
} from "./fake-model";

const open = mountPerTest();

const reply = (content: string, chunks: number, status: MessageRow["status"] = "streaming") =>
  message({ id: "a1", role: "assistant", content, status, model: REPO_A, chunks });

const body = (el: HTMLElement, id = "a1") =>
  el.querySelector(`[data-id="${id}"] .cw-msg-body`)!.textContent!.trim();

const resyncs = (model: FakeModel) => model.sent.filter((r) => r.kind === "resync").length;

describe("resilient sync", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("asks for a snapshot when it connects", () => {
    const { model } = open();
    expect(resyncs(model)).toBe(1);
  });

  it("appends streamed deltas to the reply in place", () => {
    const { model, el } = open({ ...chat([message(), reply("", 0)]), generating: true });
    const node = el.querySelector('[data-id="a1"]');
    model.delta("a1", 0, "Hello ");
    model.delta("a1", 1, "**there**");
    expect(el.querySelector('[data-id="a1"]')).toBe(node);
    expect(body(el)).toBe("Hello there");
    expect(node!.querySelector("strong")!.textContent).toBe("there");
    expect(node!.querySelector(".cw-caret")).not.toBeNull();
    // The turn ends: the final row carries the whole text.
    model.update({ ...chat([message(), reply("Hello **there**!", 2, "done")]) });
    expect(body(el)).toBe("Hello there!");
    expect(node!.querySelector(".cw-caret")).toBeNull();
    expect(resyncs(model)).toBe(1); // nothing was missing
  });

  it("drops a delta, notices the gap, and recovers the text through a snapshot", async () => {
    vi.useFakeTimers();
    const { model, el } = mount({ ...chat([message(), reply("", 0)]), generating: true });
    model.answerResync();
    await flush(); // the snapshot asked for on connect
    model.delta("a1", 0, "one ");
    model.nextSeq(); // chunk 1 ("two ") is lost on the way
    model.delta("a1", 2, "three ");
    expect(body(el)).toBe("one"); // the text never shows a hole
    expect(resyncs(model)).toBe(1);

    vi.advanceTimersByTime(GAP_GRACE_MS + 1);
    expect(resyncs(model)).toBe(2); // the gap asked for a snapshot
    model.answerResync(
      widgetState({
        ...chat([message(), reply("one two three ", 3)]),
        generating: true,
        seq: model.state.seq,
      }),
    );
    await flush();
    expect(body(el)).toBe("one two three");
    model.delta("a1", 2, "three "); // a late duplicate changes nothing
    model.delta("a1", 3, "four");
    expect(body(el)).toBe("one two three four");
    vi.advanceTimersByTime(GAP_GRACE_MS * 3);
    expect(resyncs(model)).toBe(2);
  });

  it("keeps a delta that comes before its row until the row arrives", () => {
    const { model, el } = open(chat([message()]));
    model.delta("a1", 0, "early ");
    model.update(chat([message(), reply("", 0)]));
    model.delta("a1", 1, "bird");
    expect(body(el)).toBe("early bird");
  });

  it("ignores a trait batch older than the snapshot it already has", async () => {
    const { model, el } = open(chat([message({ content: "old" })]));
    model.answerResync(widgetState({ ...chat([message({ content: "new" })]), seq: 10 }));
    await flush();
    expect(body(el, "m1")).toBe("new");
    model.update({ ...chat([message({ content: "stale" })]), seq: 9 });
    expect(body(el, "m1")).toBe("new");
    model.update({ ...chat([message({ content: "newer" })]), seq: 11 });
    expect(body(el, "m1")).toBe("newer");
  });

  it("takes a batch whose traits come one by one with seq last (as marimo sets them)", async () => {
    const { model, el } = open(chat([message({ content: "old" })]));
    model.answerResync(widgetState({ ...chat([message({ content: "snap" })]), seq: 10 }));
    await flush();
    // Batch 11 arrives trait by trait: the transcript first, while the model's seq is 10.
    model.state.transcript = chat([message({ content: "batch 11" })]).transcript!;
    model.emit("change:transcript");
    expect(body(el, "m1")).toBe("snap"); // not older than the snapshot? not known yet
    model.state.seq = 11;
    model.emit("change:seq");
    expect(body(el, "m1")).toBe("batch 11");
  });

  it("asks again when nothing arrives for a second while work is in flight", async () => {
    vi.useFakeTimers();
    const { model } = mount({ busy: true });
    model.answerResync();
    await flush();
    vi.advanceTimersByTime(RESYNC_IDLE_MS - 50);
    expect(resyncs(model)).toBe(1);
    vi.advanceTimersByTime(100);
    expect(resyncs(model)).toBe(2);
    model.answerResync(widgetState({ busy: true, seq: model.state.seq }));
    await flush();
    vi.advanceTimersByTime(RESYNC_IDLE_MS + 1);
    expect(resyncs(model)).toBe(3);
    model.answerResync(widgetState({ busy: false, seq: model.state.seq }));
    await flush();
    vi.advanceTimersByTime(RESYNC_IDLE_MS * 5);
    expect(resyncs(model)).toBe(3); // idle: no polling
  });

  it("asks again when a snapshot request gets no answer, and ignores a late, older one", async () => {
    vi.useFakeTimers();
    const { model, el } = mount({ busy: true, ...chat([message({ content: "old" })]) });
    // The request sent on connect is lost (the host was not ready, say): never answered.
    const lost = model.sent.filter((r) => r.kind === "resync")[0]!;
    vi.advanceTimersByTime(RESYNC_RETRY_MS + RESYNC_IDLE_MS + 10);
    expect(resyncs(model)).toBeGreaterThanOrEqual(2);
    model.answerResync(widgetState({ ...chat([message({ content: "new" })]), seq: 5 }));
    await flush();
    expect(body(el, "m1")).toBe("new");
    // The lost request's answer turns up after all, older than what the view holds.
    model.reply(true, undefined, lost.id, {
      state: widgetState({ ...chat([message({ content: "older" })]), seq: 3 }),
    });
    await flush();
    expect(body(el, "m1")).toBe("new");
  });

  it("learns from a reply that updates were sent but never arrived (a host dropped them)", async () => {
    vi.useFakeTimers();
    const { model, el } = mount();
    model.answerResync();
    await flush();
    within(el).getByRole<HTMLTextAreaElement>("textbox", { name: "Message" }).value = "hi";
    within(el).getByRole("button", { name: "Send" }).click();
    // The kernel published seq 2..4 from its background thread; none of it arrived.
    model.reply(true, undefined, undefined, { seq: model.state.seq + 3, busy: true });
    await flush();
    vi.advanceTimersByTime(GAP_GRACE_MS + 1);
    expect(resyncs(model)).toBe(2);
    model.answerResync(
      widgetState({
        ...chat([message({ content: "hi" }), reply("Hi the", 1)]),
        generating: true,
        busy: true,
        seq: 4,
      }),
    );
    await flush();
    expect(body(el)).toBe("Hi the");
    vi.advanceTimersByTime(RESYNC_IDLE_MS + 1); // still busy and quiet: ask again
    expect(resyncs(model)).toBe(3);
  });

  it("a second view that opens mid-reply shows the text streamed so far", async () => {
    const model = new FakeModel(widgetState({ ...chat([message(), reply("", 0)]) }));
    const first = mount({}, model);
    model.delta("a1", 0, "streamed before ");
    const second = mount({}, model);
    model.answerResync(
      widgetState({ ...chat([message(), reply("streamed before ", 1)]), seq: model.state.seq }),
    );
    await flush();
    model.delta("a1", 1, "the second view");
    expect(body(first.el)).toBe("streamed before the second view");
    expect(body(second.el)).toBe("streamed before the second view");
    first.cleanup();
    second.cleanup();
  });
});

describe("long conversations", () => {
  const history = (from: number, to: number): MessageRow[] =>
    Array.from({ length: to - from }, (_, k) =>
      message({ id: `h${from + k}`, content: `message ${from + k}` }),
    );

  it("shows the kernel's last page at once and older pages on demand, in order", async () => {
    const total = 1000;
    const start = Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE;
    const { model, el } = open(chat(history(start, total), { start, total }));
    const ids = () =>
      Array.from(el.querySelectorAll<HTMLElement>(".cw-messages [data-id]")).map(
        (n) => n.dataset.id,
      );
    expect(ids()).toEqual(history(start, total).map((m) => m.id));
    // Opening the conversation fetched the page before the window.
    const ask = model.sent.filter((r) => r.kind === "history").pop()!;
    expect(ask).toMatchObject({ conversation_id: "c1", before: start, limit: 100 });
    model.reply(true, undefined, ask.id, {
      page: transcript(history(start - 100, start), { start: start - 100, total }),
    });
    await flush();
    expect(ids()).toEqual(history(start - 100, total).map((m) => m.id));
    const earlier = within(el).getByRole("button", { name: /Show earlier messages/ });
    expect(earlier).toHaveTextContent(`(${start - 100} more)`);

    // A new turn only touches the last page; the older ones stay as they were drawn.
    const old = el.querySelector('[data-id="h500"]');
    model.update(chat([...history(start, total), message({ id: "new" })], { start, total: 1001 }));
    expect(el.querySelector('[data-id="h500"]')).toBe(old);
    expect(ids().slice(-2)).toEqual(["h999", "new"]);

    earlier.click();
    const next = model.sent.filter((r) => r.kind === "history").pop()!;
    expect(next).toMatchObject({ before: start - 100 });
    model.reply(true, undefined, next.id, {
      page: transcript(history(start - 200, start - 100), { start: start - 200, total: 1001 }),
    });
    await flush();
    expect(ids()[0]).toBe(`h${start - 200}`);
    expect(ids()).toHaveLength(211);
  });

  it("starts over, and fetches what it missed, when messages arrive beyond what it has", () => {
    const { model, el } = open(chat([message({ id: "h0", content: "first" })]));
    model.update(chat(history(20, 25), { start: 20, total: 25 }));
    expect(el.querySelector('[data-id="h0"]')).toBeNull(); // not shown out of order
    const ask = model.sent.filter((r) => r.kind === "history").pop()!;
    expect(ask).toMatchObject({ before: 20 });
  });

  it("starts over when older messages changed (a new epoch)", () => {
    const { model, el } = open(chat(history(10, 12), { start: 10, total: 12 }));
    model.update(chat([message({ id: "e1", content: "edited" })], { epoch: 1, start: 0 }));
    expect(el.querySelector('[data-id="h10"]')).toBeNull();
    expect(body(el, "e1")).toBe("edited");
  });
});
