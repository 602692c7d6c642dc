import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import render from "../src/index";
import { FakeModel, REPO_B, chat, download, message, mount, widgetState } from "./fake-model";

describe("widget", () => {
  it("mounts the three panels with their accessible names", () => {
    const { el, cleanup } = mount();
    const ui = within(el);
    expect(ui.getByRole("combobox", { name: "Model" })).toBeInTheDocument();
    expect(ui.getByRole("textbox", { name: "Message" })).toBeInTheDocument();
    expect(ui.getByRole("button", { name: "Send" })).toBeInTheDocument();
    expect(ui.getByRole("region", { name: "Downloads" })).toBeInTheDocument();
    expect(ui.getByRole("list", { name: "Conversations" })).toBeInTheDocument();
    cleanup();
  });

  it("cleanup removes every listener it added and its DOM", () => {
    const model = new FakeModel(widgetState());
    const el = document.createElement("div");
    const cleanup = render.render({ model, el });
    expect(model.listenerCount()).toBeGreaterThan(9); // one per trait + msg:custom
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(el.childElementCount).toBe(0);
    model.update({
      downloads: [download()],
      last_switch: { seq: 1, conversation_id: "c1", repo_id: REPO_B },
    });
    expect(el.childElementCount).toBe(0);
  });

  it("a second render of the same model shows the same state", () => {
    const model = new FakeModel(
      widgetState({
        ...chat([message({ content: "still here" })]),
        downloads: [download()],
      }),
    );
    const first = mount({}, model);
    first.cleanup();
    const second = mount({}, model);
    expect(second.el).toHaveTextContent("still here");
    const bar = within(second.el).getByRole("progressbar");
    expect(bar).toHaveAttribute("aria-valuenow", "45");
    second.cleanup();
  });

  it("two live views both follow the kernel, and only the asking view reports its failure", async () => {
    const user = userEvent.setup();
    const model = new FakeModel(widgetState());
    const a = mount({}, model);
    const b = mount({}, model);
    model.update({ downloads: [download()] });
    expect(within(a.el).getByRole("progressbar")).toHaveAttribute("aria-valuenow", "45");
    expect(within(b.el).getByRole("progressbar")).toHaveAttribute("aria-valuenow", "45");

    await user.click(within(a.el).getByRole("button", { name: "Cancel" }));
    await user.click(within(a.el).getByRole("button", { name: "Cancel download" }));
    model.reply(false, "already finished");
    await Promise.resolve();
    await Promise.resolve();
    expect(within(a.el).getByRole("alert")).toHaveTextContent("already finished");
    expect(within(b.el).queryByRole("alert")).toBeNull();
    a.cleanup();
    b.cleanup();
  });

  it("shows kernel errors in a dismissible alert area", async () => {
    const user = userEvent.setup();
    const { model, el, cleanup } = mount();
    expect(within(el).queryByRole("alert")).toBeNull();
    model.update({ errors: [{ seq: 1, message: "observer failed: boom" }] });
    const alert = within(el).getByRole("alert");
    expect(alert).toHaveTextContent("observer failed: boom");
    await user.click(within(alert).getByRole("button", { name: "Dismiss error" }));
    expect(within(el).queryByRole("alert")).toBeNull();
    expect(within(el).getByRole("textbox", { name: "Message" })).toHaveFocus();
    model.update({
      errors: [
        { seq: 1, message: "observer failed: boom" },
        { seq: 2, message: "second failure" },
      ],
    });
    expect(within(el).getByRole("alert")).toHaveTextContent("second failure");
    expect(within(el).getByRole("alert")).not.toHaveTextContent("boom");
    cleanup();
  });

  it("shows a failure while drawing a trait instead of swallowing it", () => {
    const { model, el, cleanup } = mount();
    const spy = vi.spyOn(console, "error").mockImplementation(() => undefined);
    // A malformed update: a download row without its numbers or state.
    model.update({ downloads: [{ repo_id: 42 } as unknown as ReturnType<typeof download>] });
    expect(within(el).getByRole("alert")).toHaveTextContent(/could not show a change of downloads/);
    expect(spy).toHaveBeenCalled();
    cleanup();
  });

  it("never writes traits", async () => {
    const user = userEvent.setup();
    const { model, el, cleanup } = mount({
      downloads: [download({ state: "Failed", can_cancel: false, can_retry: true })],
    });
    await user.type(within(el).getByRole("textbox", { name: "Message" }), "hi{Enter}");
    await user.click(within(el).getByRole("button", { name: "Retry" }));
    await user.selectOptions(within(el).getByRole("combobox", { name: "Model" }), REPO_B);
    expect(model.writes).toEqual([]);
    expect(model.sentKinds()).toEqual(["send", "retry_download", "select_model"]);
    cleanup();
  });
});

describe("widget in JupyterLab and Notebook 7", () => {
  type Phase = "bubbling" | "capture";

  /** Keys a Lumino app listening on the document in `phase` would act on. */
  function keysTheAppActsOn(phase: Phase, target: HTMLElement, keys: KeyboardEventInit[]) {
    const seen: string[] = [];
    const listener = (event: KeyboardEvent): void => {
      // Lumino skips shortcuts for targets inside an element with this attribute.
      const origin = event.target as Element;
      if (origin.closest("[data-lm-suppress-shortcuts]")) return;
      seen.push(`${event.ctrlKey ? "Ctrl+" : ""}${event.shiftKey ? "Shift+" : ""}${event.key}`);
    };
    document.addEventListener("keydown", listener, phase === "capture");
    for (const init of keys) {
      target.dispatchEvent(new KeyboardEvent("keydown", { bubbles: true, ...init }));
    }
    document.removeEventListener("keydown", listener, phase === "capture");
    return seen;
  }

  const KEYS = [
    { key: "a" },
    { key: "Enter" },
    { key: "Enter", shiftKey: true },
    { key: "Escape" },
    { key: "z", ctrlKey: true },
    { key: "s", ctrlKey: true },
  ];

  it.each(["bubbling", "capture"] as const)(
    "keeps plain keys from %s-phase notebook shortcuts but lets Ctrl+S through",
    (phase) => {
      const { el, cleanup } = mount();
      const box = within(el).getByRole("textbox", { name: "Message" });
      const send = within(el).getByRole("button", { name: "Send" });
      expect(keysTheAppActsOn(phase, box, KEYS)).toEqual(["Ctrl+s"]);
      expect(keysTheAppActsOn(phase, send, KEYS)).toEqual(["Ctrl+z", "Ctrl+s"]);
      cleanup();
    },
  );

  it("leaves keys pressed outside the widget alone, also after cleanup", () => {
    const { cleanup } = mount();
    const outside = document.createElement("input");
    document.body.append(outside);
    expect(keysTheAppActsOn("capture", outside, [{ key: "a" }])).toEqual(["a"]);
    cleanup();
    expect(keysTheAppActsOn("capture", outside, [{ key: "b" }])).toEqual(["b"]);
    outside.remove();
  });
});
