// marimo renders each widget inside a shadow root: there the document's activeElement is
// the shadow host, so focus handling must ask the shadow root instead.
import { within } from "@testing-library/dom";
import render from "../src/index";
import { FakeModel, REPO_B, download, widgetState } from "./fake-model";

function mountInShadowRoot(model: FakeModel): {
  root: ShadowRoot;
  el: HTMLElement;
  cleanup: () => void;
} {
  const host = document.createElement("div");
  document.body.append(host);
  const root = host.attachShadow({ mode: "open" });
  const el = document.createElement("div");
  root.append(el);
  const dispose = render.render({ model, el });
  return {
    root,
    el,
    cleanup: () => {
      dispose();
      host.remove();
    },
  };
}

function press(target: Element, key: string, shiftKey = false): void {
  target.dispatchEvent(
    new KeyboardEvent("keydown", {
      key,
      shiftKey,
      bubbles: true,
      composed: true,
      cancelable: true,
    }),
  );
}

describe("inside a shadow root (as in marimo)", () => {
  it("keeps Tab inside the confirmation dialog and gives focus back to Cancel", async () => {
    const model = new FakeModel(widgetState({ downloads: [download()] }));
    const { root, el, cleanup } = mountInShadowRoot(model);
    try {
      const row = within(el).getByRole("group", { name: REPO_B });
      const cancel = within(row).getByRole("button", { name: "Cancel" });
      cancel.focus();
      expect(root.activeElement).toBe(cancel);
      cancel.click();
      const dialog = within(el).getByRole("alertdialog");
      const keep = within(dialog).getByRole("button", { name: "Keep downloading" });
      const confirm = within(dialog).getByRole("button", { name: "Cancel download" });
      expect(root.activeElement).toBe(keep);
      press(keep, "Tab");
      expect(root.activeElement).toBe(confirm);
      press(confirm, "Tab");
      expect(root.activeElement).toBe(keep);
      press(keep, "Tab", true);
      expect(root.activeElement).toBe(confirm);
      press(confirm, "Escape");
      expect(within(el).queryByRole("alertdialog")).toBeNull();
      expect(root.activeElement).toBe(cancel);
      expect(model.intents()).toHaveLength(0);
    } finally {
      cleanup();
    }
  });
});
