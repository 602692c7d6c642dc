import { Rpc } from "../src/rpc";
import { FakeModel, flush, widgetState } from "./fake-model";

describe("rpc", () => {
  it("sends intents with unique ids and resolves with the matching reply", async () => {
    const model = new FakeModel(widgetState());
    const failures: string[] = [];
    const rpc = new Rpc(model, (m) => failures.push(m));
    const first = rpc.request({ kind: "stop" });
    const second = rpc.request({ kind: "retry_download", repo_id: "a/b" });
    expect(model.sent).toHaveLength(2);
    expect(model.sent[0].id).not.toBe(model.sent[1].id);
    expect(model.sent[1]).toMatchObject({ kind: "retry_download", repo_id: "a/b" });

    model.reply(true, undefined, model.sent[1].id);
    model.reply(true, undefined, model.sent[0].id);
    expect(await second).toMatchObject({ ok: true, kind: "retry_download-response" });
    expect(await first).toMatchObject({ ok: true, kind: "stop-response" });
    expect(rpc.pendingCount).toBe(0);
    expect(failures).toEqual([]);
  });

  it("reports a failed reply with the kernel's error", async () => {
    const model = new FakeModel(widgetState());
    const failures: string[] = [];
    const rpc = new Rpc(model, (m) => failures.push(m));
    const pending = rpc.request({ kind: "cancel_download", repo_id: "a/b" });
    model.reply(false, "a/b is not in the queue");
    expect((await pending).ok).toBe(false);
    expect(failures).toEqual(["Could not cancel download: a/b is not in the queue"]);
  });

  it("lets the caller handle failures quietly", async () => {
    const model = new FakeModel(widgetState());
    const failures: string[] = [];
    const rpc = new Rpc(model, (m) => failures.push(m));
    const pending = rpc.request({ kind: "add_model", repo_id: "a/b" }, { quiet: true });
    model.reply(false, "nope");
    expect((await pending).error).toBe("nope");
    expect(failures).toEqual([]);
  });

  it("ignores replies meant for other views and malformed messages", async () => {
    const model = new FakeModel(widgetState());
    const rpc = new Rpc(model, () => undefined);
    let settled = false;
    void rpc.request({ kind: "stop" }).then(() => {
      settled = true;
    });
    model.emit("msg:custom", { id: "someone-else", kind: "stop-response", ok: true });
    model.emit("msg:custom", "garbage");
    model.emit("msg:custom", { id: model.sent[0].id, kind: "stop" });
    await flush();
    expect(settled).toBe(false);
    expect(rpc.pendingCount).toBe(1);
  });

  it("says the kernel is slow after the timeout, and still takes the late reply", async () => {
    vi.useFakeTimers();
    try {
      const model = new FakeModel(widgetState());
      const failures: string[] = [];
      const rpc = new Rpc(model, (m) => failures.push(m), 1000);
      let settled = false;
      const pending = rpc.request({ kind: "select_model", repo_id: "a/b" }).then((reply) => {
        settled = true;
        return reply;
      });
      vi.advanceTimersByTime(999);
      expect(failures).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(failures).toHaveLength(1);
      expect(failures[0]).toMatch(/No reply from the kernel to "select model" yet: it may be busy/);
      await flush();
      expect(settled).toBe(false); // not failed: nothing gets sent twice
      model.reply(true);
      expect((await pending).ok).toBe(true);
      expect(failures).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it("stops listening on dispose and settles pending requests without reporting", async () => {
    const model = new FakeModel(widgetState());
    const failures: string[] = [];
    const rpc = new Rpc(model, (m) => failures.push(m));
    const pending = rpc.request({ kind: "stop" });
    expect(model.listenerCount()).toBe(1);
    rpc.dispose();
    expect(model.listenerCount()).toBe(0);
    expect((await pending).ok).toBe(false);
    expect(failures).toEqual([]);
  });
});
