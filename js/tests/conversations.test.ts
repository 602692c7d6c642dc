import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import { REPO_B, chat, conversation, message, mountPerTest } from "./fake-model";

const open = mountPerTest();
const twoChats = () => ({
  conversations: [
    conversation(),
    conversation({ id: "c2", title: "Second", active_model: null, requested_model: REPO_B }),
  ],
});

describe("conversations", () => {
  it("lists conversations, marks the active one, and shows each one's model", () => {
    const { el } = open(twoChats());
    const list = within(el).getByRole("list", { name: "Conversations" });
    const items = within(list).getAllByRole("listitem");
    expect(items).toHaveLength(2);
    expect(items[0]).toHaveTextContent("SmolLM2 135M Instruct");
    expect(items[1]).toHaveTextContent("Qwen2.5 0.5B Instruct (waiting)");
    expect(within(list).getByRole("button", { current: true })).toHaveTextContent("First chat");
  });

  it("creates a new conversation and switches by clicking", async () => {
    const user = userEvent.setup();
    const { model, el } = open(twoChats());
    await user.click(within(el).getByRole("button", { name: "New conversation" }));
    await user.click(within(el).getByRole("button", { name: /^Second/ }));
    expect(model.intents().map(({ id: _id, ...rest }) => rest)).toEqual([
      { kind: "new_conversation" },
      { kind: "switch_conversation", conversation_id: "c2" },
    ]);
  });

  it("renames inline: Enter commits, Escape cancels", async () => {
    const user = userEvent.setup();
    const { model, el } = open(twoChats());
    await user.click(within(el).getByRole("button", { name: "Rename Second" }));
    const input = within(el).getByRole("textbox", { name: "Conversation title" });
    expect(input).toHaveFocus();
    await user.clear(input);
    await user.type(input, "Renamed{Enter}");
    expect(model.intents()[0]).toMatchObject({
      kind: "rename_conversation",
      conversation_id: "c2",
      title: "Renamed",
    });

    await user.click(within(el).getByRole("button", { name: "Rename First chat" }));
    await user.type(within(el).getByRole("textbox", { name: "Conversation title" }), "zzz{Escape}");
    expect(model.intents()).toHaveLength(1);
    expect(within(el).queryByRole("textbox", { name: "Conversation title" })).toBeNull();
  });

  it("does not redraw the list on every streamed token", () => {
    const { model, el } = open(twoChats());
    const before = within(el).getByRole("button", { name: /^First chat/ });
    model.update(chat([message({ content: "streaming…" })]));
    model.delta("m1", 0, " more");
    expect(within(el).getByRole("button", { name: /^First chat/ })).toBe(before);
  });

  it("deletes only after confirmation", async () => {
    const user = userEvent.setup();
    const { model, el } = open(twoChats());
    await user.click(within(el).getByRole("button", { name: "Delete Second" }));
    const dialog = within(el).getByRole("alertdialog");
    await user.click(within(dialog).getByRole("button", { name: "Keep" }));
    expect(model.intents()).toHaveLength(0);

    await user.click(within(el).getByRole("button", { name: "Delete Second" }));
    await user.click(within(el).getByRole("button", { name: "Delete" }));
    expect(model.intents()[0]).toMatchObject({
      kind: "delete_conversation",
      conversation_id: "c2",
    });
  });
});
