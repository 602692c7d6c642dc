import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import {
  REPO_A,
  REPO_B,
  chat,
  conversation,
  download,
  flush,
  message,
  mountPerTest,
} from "./fake-model";

const open = mountPerTest();

const streaming = (content: string) =>
  message({
    id: "a1",
    role: "assistant",
    content,
    status: "streaming",
    model: REPO_A,
  });

describe("chat panel", () => {
  it("updates a streaming reply in place without rebuilding the list", () => {
    const { model, el } = open({
      ...chat([message(), streaming("Hel")]),
      generating: true,
    });
    const userNode = el.querySelector('[data-id="m1"]');
    const replyNode = el.querySelector('[data-id="a1"]');
    expect(replyNode!.querySelector(".cw-msg-body")!.textContent!.trim()).toBe("Hel");
    expect(replyNode!.querySelector(".cw-msg-body p > .cw-caret")).not.toBeNull();
    expect(replyNode!.getAttribute("aria-busy")).toBe("true");

    model.update({
      ...chat([message(), streaming("Hello **there**")]),
    });
    expect(el.querySelector('[data-id="a1"]')).toBe(replyNode);
    expect(el.querySelector('[data-id="m1"]')).toBe(userNode);
    expect(replyNode!.querySelector("strong")!.textContent).toBe("there");

    model.update({
      ...chat([
        message(),
        message({
          id: "a1",
          role: "assistant",
          content: "Hello **there**!",
          status: "done",
          model: REPO_A,
          new_tokens: 42,
          tokens_per_s: 18.25,
        }),
      ]),
      generating: false,
    });
    expect(replyNode!.getAttribute("aria-busy")).toBeNull();
    expect(replyNode!.querySelector(".cw-caret")).toBeNull();
    const meta = replyNode!.querySelector(".cw-msg-meta")!.textContent;
    expect(meta).toContain("SmolLM2 135M Instruct");
    expect(meta).toContain("42 tokens");
    expect(meta).toContain("18.3 tok/s");
  });

  it("announces a finished reply to screen readers, but not replies already done", () => {
    const done = message({ id: "a0", role: "assistant", content: "old", model: REPO_A });
    const { model, el } = open({
      ...chat([done, streaming("Hi")]),
    });
    const announcer = el.querySelector("[aria-live='polite'].cw-sr-only")!;
    expect(announcer).toHaveTextContent("");
    model.update({
      ...chat([done, message({ id: "a1", role: "assistant", content: "Hi all", model: REPO_A })]),
    });
    expect(announcer).toHaveTextContent("Reply from SmolLM2 135M Instruct: Hi all");
  });

  it("keeps the list pinned to the bottom only when it was at the bottom", () => {
    const { model, el } = open({
      ...chat([message(), streaming("a")]),
    });
    const list = el.querySelector<HTMLElement>(".cw-messages")!;
    // jsdom has no layout: the content height grows with the text, the view is 300px.
    const scrollHeight = (): number => 1000 + list.textContent!.length * 10;
    let scrollTop = 0;
    Object.defineProperty(list, "scrollHeight", { get: scrollHeight });
    Object.defineProperty(list, "clientHeight", { get: () => 300 });
    Object.defineProperty(list, "scrollTop", {
      get: () => scrollTop,
      set: (value: number) => {
        scrollTop = Math.max(0, Math.min(value, scrollHeight() - 300));
      },
    });

    list.scrollTop = 1e9; // at the bottom
    model.update({ ...chat([message(), streaming("ab")]) });
    expect(list.scrollTop).toBe(scrollHeight() - 300);

    list.scrollTop = 200; // the user scrolled up to read
    model.update({ ...chat([message(), streaming("abc")]) });
    expect(list.scrollTop).toBe(200);
  });

  it("sends on Enter and inserts a newline on Shift+Enter", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const box = within(el).getByRole("textbox", { name: "Message" });
    await user.click(box);
    await user.keyboard("first line{Shift>}{Enter}{/Shift}second line");
    expect((box as HTMLTextAreaElement).value).toBe("first line\nsecond line");
    expect(model.intents()).toHaveLength(0);

    await user.keyboard("{Enter}");
    expect(model.intents()).toHaveLength(1);
    expect(model.intents()[0]).toMatchObject({ kind: "send", text: "first line\nsecond line" });
    expect((box as HTMLTextAreaElement).value).toBe("");
  });

  it("sends with the Send button and ignores blank messages", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const box = within(el).getByRole("textbox", { name: "Message" });
    const send = within(el).getByRole("button", { name: "Send" });
    await user.type(box, "   ");
    await user.click(send);
    expect(model.intents()).toHaveLength(0);
    await user.type(box, "hi");
    await user.click(send);
    expect(model.sentKinds()).toEqual(["send"]);
  });

  it("shows the message being sent at once, then the kernel's row for it", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    await user.type(within(el).getByRole("textbox", { name: "Message" }), "hi there{Enter}");
    const pending = el.querySelector(".cw-msg-pending")!;
    expect(pending).toHaveTextContent("hi there");
    expect(pending.getAttribute("data-status")).toBe("sending");
    model.reply(true);
    await flush();
    model.update(chat([message({ id: "u1", content: "hi there" })]));
    expect(el.querySelector(".cw-msg-pending")).toBeNull();
    expect(el.querySelectorAll("article.cw-msg-user")).toHaveLength(1);
  });

  it("gives the text back when the kernel refuses the message", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const box = within(el).getByRole<HTMLTextAreaElement>("textbox", { name: "Message" });
    await user.type(box, "keep me{Enter}");
    expect(box.value).toBe("");
    model.reply(false, "no model is loaded");
    await flush();
    expect(box.value).toBe("keep me");
    expect(el.querySelector(".cw-msg-pending")).toBeNull();
    expect(within(el).getByRole("alert").textContent).toContain("no model is loaded");
  });

  it("renders HTML in user and assistant messages as text", () => {
    const hostile = "<img src=x onerror=alert(1)> <script>alert(2)</script>";
    const { el } = open({
      ...chat([
        message({ content: hostile }),
        message({ id: "a1", role: "assistant", content: hostile, model: REPO_A }),
      ]),
    });
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector("script")).toBeNull();
    const bodies = Array.from(el.querySelectorAll(".cw-msg-body")).map((b) => b.textContent);
    expect(bodies[0]).toBe(hostile);
    expect(bodies[1]).toContain("<img src=x onerror=alert(1)>");
    expect(bodies[1]).toContain("<script>alert(2)</script>");
  });

  it("styles code blocks in replies", () => {
    const { el } = open({
      ...chat([
        message({
          id: "a1",
          role: "assistant",
          content: "Try:\n\n```js\nconsole.log(1)\n```",
          model: REPO_A,
        }),
      ]),
    });
    const block = el.querySelector('[data-id="a1"] .cw-code');
    expect(block).not.toBeNull();
    expect(block!.querySelector("pre > code.language-js")!.textContent).toBe("console.log(1)\n");
  });

  it("shows Stop while generating and sends stop", async () => {
    const user = userEvent.setup();
    const { model, el } = open({
      ...chat([message(), streaming("x")]),
    });
    expect(within(el).queryByRole("button", { name: "Stop" })).toBeNull();
    model.update({ generating: true });
    const send = within(el).getByRole("button", { name: "Send" });
    expect(send).toBeDisabled();
    expect(send).toHaveAccessibleDescription(/being generated/);
    await user.click(within(el).getByRole("button", { name: "Stop" }));
    expect(model.sentKinds()).toEqual(["stop"]);
    model.update({ generating: false });
    expect(within(el).queryByRole("button", { name: "Stop" })).toBeNull();
  });

  it("offers Regenerate for a finished last reply only", async () => {
    const user = userEvent.setup();
    const done = message({ id: "a1", role: "assistant", content: "ok", model: REPO_A });
    const { model, el } = open({
      ...chat([message(), done]),
    });
    await user.click(within(el).getByRole("button", { name: "Regenerate" }));
    expect(model.sentKinds()).toEqual(["regenerate"]);

    model.update({
      ...chat([message(), done, message({ id: "m2" })]),
    });
    expect(within(el).queryByRole("button", { name: "Regenerate" })).toBeNull();
  });

  it("shows stopped and error badges under replies", () => {
    const { el } = open({
      ...chat([
        message({
          id: "a1",
          role: "assistant",
          content: "half",
          status: "stopped",
          model: REPO_A,
        }),
        message({
          id: "a2",
          role: "assistant",
          content: "",
          status: "error",
          model: REPO_A,
          error: "out of memory",
        }),
      ]),
    });
    expect(el.querySelector('[data-id="a1"] .cw-badge')!.textContent).toBe("Stopped");
    expect(el.querySelector('[data-id="a2"] .cw-badge')!.textContent).toBe("Error");
    expect(el.querySelector('[data-id="a2"] .cw-msg-error')!.textContent).toBe("out of memory");
  });

  it("says which model the conversation waits for and disables Send with the reason", async () => {
    const user = userEvent.setup();
    const { model, el } = open({
      conversations: [conversation({ active_model: null, requested_model: REPO_B })],
      downloads: [download()],
    });
    const box = within(el).getByRole<HTMLTextAreaElement>("textbox", { name: "Message" });
    expect(box.placeholder).toBe("Waiting for Qwen2.5 0.5B Instruct (Downloading 45%)…");
    const send = within(el).getByRole("button", { name: "Send" });
    expect(send).toBeDisabled();
    expect(send).toHaveAccessibleDescription(/Waiting for Qwen2.5 0.5B Instruct/);
    await user.type(box, "hello{Enter}");
    expect(model.intents()).toHaveLength(0);
    expect(box.value).toBe("hello"); // the draft is kept

    model.update({
      conversations: [conversation({ active_model: REPO_B, requested_model: REPO_B })],
    });
    expect(send).toBeEnabled();
    expect(box.placeholder).toBe("Message Qwen2.5 0.5B Instruct…");
  });

  it("keeps a draft per conversation across switches", async () => {
    const user = userEvent.setup();
    const { model, el } = open({
      conversations: [conversation(), conversation({ id: "c2", title: "Second" })],
    });
    const box = within(el).getByRole<HTMLTextAreaElement>("textbox", { name: "Message" });
    await user.type(box, "draft one");
    model.update({ active_conversation: "c2", ...chat([], { conversationId: "c2" }) });
    expect(box.value).toBe("");
    model.update({ active_conversation: "c1", ...chat([]) });
    expect(box.value).toBe("draft one");
  });

  it("shows only the active conversation's messages", () => {
    const { model, el } = open({
      conversations: [conversation(), conversation({ id: "c2", title: "Second" })],
      ...chat([message({ content: "in one" })]),
    });
    expect(el.querySelector(".cw-messages")!.textContent).toContain("in one");
    model.update({
      active_conversation: "c2",
      ...chat([message({ id: "x", content: "in two" })], { conversationId: "c2" }),
    });
    const text = el.querySelector(".cw-messages")!.textContent;
    expect(text).toContain("in two");
    expect(text).not.toContain("in one");
    expect(el.querySelector(".cw-chat-title")!.textContent).toBe("Second");
  });
});
