// Keyboard users keep their place when the button they are on goes away with a state change.
import { within } from "@testing-library/dom";
import { chat, download, message, mountPerTest, REPO_A, REPO_B } from "./fake-model";

const open = mountPerTest();

function rowOf(el: HTMLElement): HTMLElement {
  return within(el).getByRole("group", { name: REPO_B });
}

describe("focus follows the download row's actions", () => {
  it("moves from Cancel to Retry once the download is canceled", () => {
    const { model, el } = open({ downloads: [download()] });
    within(rowOf(el)).getByRole("button", { name: "Cancel" }).focus();
    model.update({ downloads: [download({ state: "Canceled" })] });
    expect(within(rowOf(el)).getByRole("button", { name: "Retry" })).toHaveFocus();
  });

  it("moves from Retry to Cancel once the download is queued again", () => {
    const { model, el } = open({ downloads: [download({ state: "Failed" })] });
    within(rowOf(el)).getByRole("button", { name: "Retry" }).focus();
    model.update({ downloads: [download({ state: "Queued", bytes_done: 0 })] });
    expect(within(rowOf(el)).getByRole("button", { name: "Cancel" })).toHaveFocus();
  });

  it("moves to the download manager when the row has no action left", () => {
    const { model, el } = open({ downloads: [download()] });
    within(rowOf(el)).getByRole("button", { name: "Cancel" }).focus();
    model.update({ downloads: [download({ state: "Ready" })] });
    expect(within(el).getByRole("region", { name: "Downloads" })).toHaveFocus();
  });

  it("leaves focus alone when it is elsewhere", () => {
    const { model, el } = open({ downloads: [download()] });
    const box = within(el).getByRole("textbox", { name: "Message" });
    box.focus();
    model.update({ downloads: [download({ state: "Canceled" })] });
    expect(box).toHaveFocus();
  });
});

describe("focus follows the composer's actions", () => {
  const reply = message({ id: "m2", role: "assistant", content: "Hi", model: REPO_A });
  const turn = chat([message(), reply]);

  it("moves from Stop to the message box when the reply ends", () => {
    const { model, el } = open({ ...turn, generating: true });
    within(el).getByRole("button", { name: "Stop" }).focus();
    model.update({ generating: false });
    expect(within(el).getByRole("textbox", { name: "Message" })).toHaveFocus();
  });

  it("moves from Regenerate to Stop while the new reply is written", () => {
    const { model, el } = open(turn);
    within(el).getByRole("button", { name: "Regenerate" }).focus();
    model.update({ generating: true });
    expect(within(el).getByRole("button", { name: "Stop" })).toHaveFocus();
  });
});
