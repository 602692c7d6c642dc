import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import { vi } from "vitest";
import { REPO_A, chat, flush, message, mountPerTest } from "./fake-model";

const open = mountPerTest();

const reply = (version: number, versions: number, content = `Reply ${version + 1}`) =>
  message({
    id: `a${version}`,
    role: "assistant",
    content,
    model: REPO_A,
    version,
    versions,
  });

describe("version pager", () => {
  it("shows 2 / 3 with named buttons and asks for the neighbouring versions", async () => {
    const user = userEvent.setup();
    const { model, el } = open(chat([message(), reply(1, 3)]));
    const node = el.querySelector<HTMLElement>('[data-id="a1"]')!;
    const pager = within(node).getByRole("group", { name: "Versions" });
    expect(pager).toBeVisible();
    expect(pager).toHaveTextContent("2 / 3");
    const prev = within(node).getByRole("button", { name: "Previous version" });
    const next = within(node).getByRole("button", { name: "Next version" });
    expect(prev).toBeEnabled();
    expect(next).toBeEnabled();

    await user.click(prev);
    expect(model.intents().at(-1)).toMatchObject({
      kind: "select_version",
      message_id: "a1",
      index: 0,
    });
    await user.click(next);
    expect(model.intents().at(-1)).toMatchObject({ kind: "select_version", index: 2 });
  });

  it("redraws when the kernel shows another version (a new epoch) and disables the ends", () => {
    const { model, el } = open(chat([message(), reply(1, 3)]));
    model.update(chat([message(), reply(0, 3, "The first reply")], { epoch: 1 }));
    expect(el.querySelector('[data-id="a1"]')).toBeNull();
    const node = el.querySelector<HTMLElement>('[data-id="a0"]')!;
    expect(node).toHaveTextContent("The first reply");
    expect(within(node).getByRole("group", { name: "Versions" })).toHaveTextContent("1 / 3");
    expect(within(node).getByRole("button", { name: "Previous version" })).toBeDisabled();
    expect(within(node).getByRole("button", { name: "Next version" })).toBeEnabled();
  });

  it("is hidden on a message with one version", () => {
    const { el } = open(chat([message(), reply(0, 1)]));
    const node = el.querySelector<HTMLElement>('[data-id="a0"]')!;
    expect(within(node).queryByRole("button", { name: "Previous version" })).toBeNull();
  });
});

describe("editing a user message", () => {
  it("Enter saves the edit and regenerates; the editor closes when the kernel accepts", async () => {
    const user = userEvent.setup();
    const { model, el } = open(chat([message({ content: "Helo" }), reply(0, 1)]));
    const node = el.querySelector<HTMLElement>('[data-id="m1"]')!;
    expect(
      within(el.querySelector<HTMLElement>('[data-id="a0"]')!).queryByRole("button", {
        name: "Edit",
      }),
    ).toBeNull();
    await user.click(within(node).getByRole("button", { name: "Edit" }));
    const editor = within(node).getByRole("textbox", { name: "Edit message" });
    expect(editor).toHaveFocus();
    expect(editor).toHaveValue("Helo");
    await user.clear(editor);
    await user.type(editor, "Hello{Enter}");
    expect(model.intents().at(-1)).toMatchObject({
      kind: "edit",
      message_id: "m1",
      text: "Hello",
    });
    expect(editor).toBeDisabled();
    model.reply(true);
    await flush();
    expect(within(node).queryByRole("textbox", { name: "Edit message" })).toBeNull();
  });

  it("Escape cancels and gives focus back to the Edit button", async () => {
    const user = userEvent.setup();
    const { model, el } = open(chat([message(), reply(0, 1)]));
    const node = el.querySelector<HTMLElement>('[data-id="m1"]')!;
    await user.click(within(node).getByRole("button", { name: "Edit" }));
    await user.type(within(node).getByRole("textbox", { name: "Edit message" }), " more{Escape}");
    expect(within(node).queryByRole("textbox", { name: "Edit message" })).toBeNull();
    expect(within(node).getByRole("button", { name: "Edit" })).toHaveFocus();
    expect(node.querySelector(".cw-msg-body")).toHaveTextContent("Hello");
    expect(model.sentKinds()).not.toContain("edit");
  });

  it("keeps the text when the kernel refuses the edit", async () => {
    const user = userEvent.setup();
    const { model, el } = open(chat([message(), reply(0, 1)]));
    const node = el.querySelector<HTMLElement>('[data-id="m1"]')!;
    await user.click(within(node).getByRole("button", { name: "Edit" }));
    const editor = within(node).getByRole("textbox", { name: "Edit message" });
    await user.type(editor, " again{Enter}");
    model.reply(false, "A reply is still being generated");
    await flush();
    expect(editor).toBeEnabled();
    expect(editor).toHaveValue("Hello again");
  });
});

describe("export, import and storage warnings", () => {
  it("downloads the kernel's file for Markdown and JSON", async () => {
    const user = userEvent.setup();
    const clicked: string[] = [];
    const click = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function (
      this: HTMLAnchorElement,
    ) {
      clicked.push(this.download);
    });
    URL.createObjectURL = vi.fn(() => "blob:x");
    URL.revokeObjectURL = vi.fn();
    const { model, el } = open(chat([message(), reply(0, 1)]));
    await user.click(within(el).getByRole("button", { name: "Export as Markdown" }));
    expect(model.intents().at(-1)).toMatchObject({
      kind: "export",
      conversation_id: "c1",
      format: "markdown",
    });
    model.reply(true, undefined, undefined, {
      file: { filename: "First-chat.md", mime: "text/markdown", text: "# First chat\n" },
    });
    await flush();
    await user.click(within(el).getByRole("button", { name: "Export as JSON" }));
    expect(model.intents().at(-1)).toMatchObject({ kind: "export", format: "json" });
    model.reply(true, undefined, undefined, {
      file: { filename: "First-chat.json", mime: "application/json", text: "{}" },
    });
    await flush();
    expect(clicked).toEqual(["First-chat.md", "First-chat.json"]);
    click.mockRestore();
  });

  it("imports a chosen file as text", async () => {
    const user = userEvent.setup();
    const { model, el } = open(chat([]));
    const input = el.querySelector<HTMLInputElement>('input[type="file"]')!;
    await user.upload(
      input,
      new File(['{"messages": []}'], "chat.json", { type: "application/json" }),
    );
    // FileReader reads on its own schedule: wait for the intent, with vitest's deadline.
    await vi.waitFor(() =>
      expect(model.intents().at(-1)).toMatchObject({
        kind: "import_conversation",
        text: '{"messages": []}',
      }),
    );
  });

  it("shows the history file's warning, and hides it when saving works again", () => {
    const { model, el } = open(chat([message()]));
    const banner = el.querySelector<HTMLElement>(".cw-storage-warning")!;
    expect(banner).not.toBeVisible();
    model.update({
      storage: {
        path: "/tmp/h.sqlite3",
        workspace: "default",
        warning: {
          kind: "locked",
          message: "The history file is locked by another program; changes wait in memory.",
          pending_writes: 2,
          moved_to: null,
        },
        notices: [],
      },
    });
    expect(banner).toBeVisible();
    expect(banner).toHaveAttribute("role", "status");
    expect(banner).toHaveTextContent("locked by another program");
    model.update({
      storage: { path: "/tmp/h.sqlite3", workspace: "default", warning: null, notices: [] },
    });
    expect(banner).not.toBeVisible();
  });

  it("marks an interrupted reply", () => {
    const { el } = open(
      chat([
        message(),
        message({
          id: "a0",
          role: "assistant",
          content: "Once upon",
          status: "interrupted",
          model: REPO_A,
        }),
      ]),
    );
    expect(el.querySelector('[data-id="a0"] .cw-msg-meta')).toHaveTextContent("Interrupted");
    expect(el.querySelector('[data-id="a0"] .cw-msg-body')).toHaveTextContent("Once upon");
  });
});
