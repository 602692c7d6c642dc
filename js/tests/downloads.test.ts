import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import { REPO_A, REPO_B, download, flush, mountPerTest } from "./fake-model";

const open = mountPerTest();

function region(el: HTMLElement): HTMLElement {
  return within(el).getByRole("region", { name: "Downloads" });
}
function row(el: HTMLElement, repoId: string): HTMLElement {
  return within(region(el)).getByRole("group", { name: repoId });
}

describe("download manager", () => {
  it("shows one row per download with state, progress, bytes, speed and ETA", () => {
    const { el } = open({ downloads: [download()] });
    const r = row(el, REPO_B);
    expect(r).toHaveTextContent(REPO_B);
    expect(r).toHaveTextContent("Downloading");
    const bar = within(r).getByRole("progressbar");
    expect(bar).toHaveAttribute("aria-valuenow", "45");
    expect(bar).toHaveAttribute("aria-valuemin", "0");
    expect(bar).toHaveAttribute("aria-valuemax", "100");
    expect(r).toHaveTextContent("450 MB / 1.00 GB");
    expect(r).toHaveTextContent("4.20 MB/s");
    expect(r).toHaveTextContent("2 min 11 s left");
    expect(within(r).getByRole("button", { name: "Cancel" })).toBeVisible();
    expect(within(r).queryByRole("button", { name: "Retry" })).toBeNull();
  });

  // The kernel says what a row offers (from its lifecycle table); the row only shows it.
  it.each([
    ["Queued", true, false, "Cancel", "0"],
    ["Downloading", true, false, "Cancel", "45"],
    ["Compiling", true, false, "Cancel", "100"],
    ["Ready", false, false, null, "100"],
    ["Failed", false, true, "Retry", "45"],
    ["Canceled", false, true, "Retry", "45"],
  ] as const)("labels a %s row and offers what the kernel allows", (state, c, r, action, now) => {
    const bytes = state === "Queued" ? { bytes_done: 0 } : {};
    const { el } = open({
      downloads: [download({ state, ...bytes, can_cancel: c, can_retry: r })],
    });
    const shown = row(el, REPO_B);
    expect(shown.querySelector(".cw-state-pill")).toHaveTextContent(state);
    expect(within(shown).getByRole("progressbar")).toHaveAttribute("aria-valuenow", now);
    const names = within(shown)
      .queryAllByRole("button")
      .map((b) => b.getAttribute("aria-label"));
    expect(names).toEqual(action ? [action] : []);
  });

  it("offers no Retry where it cannot help, and says what to do instead", () => {
    const { el } = open({
      downloads: [
        download({
          state: "Failed",
          error: "gated/tiny-chat is gated: you need access and a token.",
          can_cancel: false,
          can_retry: false,
          action: "Add a token",
        }),
      ],
    });
    const shown = row(el, REPO_B);
    expect(within(shown).queryByRole("button", { name: "Retry" })).toBeNull();
    expect(shown).toHaveTextContent("What to do: Add a token");
  });

  it("shows the error message on a failed row", () => {
    const { el } = open({
      downloads: [download({ state: "Failed", error: "HTTP 500 from the hub: try Retry" })],
    });
    expect(row(el, REPO_B)).toHaveTextContent("HTTP 500 from the hub: try Retry");
  });

  it("updates rows in place so a focused button keeps focus during progress", async () => {
    const user = userEvent.setup();
    const { model, el } = open({ downloads: [download({ bytes_done: 100 })] });
    const r = row(el, REPO_B);
    const cancel = within(r).getByRole("button", { name: "Cancel" });
    await user.tab();
    cancel.focus();
    model.update({ downloads: [download({ bytes_done: 600_000_000 })] });
    expect(row(el, REPO_B)).toBe(r);
    expect(cancel).toHaveFocus();
    expect(within(r).getByRole("progressbar")).toHaveAttribute("aria-valuenow", "60");
  });

  it("keeps rows in the kernel's order and drops rows that are gone", () => {
    const { model, el } = open({
      downloads: [download({ repo_id: REPO_A }), download({ repo_id: REPO_B })],
    });
    const names = (): string[] =>
      within(region(el))
        .getAllByRole("group")
        .map((g) => g.getAttribute("aria-label")!);
    expect(names()).toEqual([REPO_A, REPO_B]);
    model.update({ downloads: [download({ repo_id: REPO_B }), download({ repo_id: REPO_A })] });
    expect(names()).toEqual([REPO_B, REPO_A]);
    model.update({ downloads: [download({ repo_id: REPO_A })] });
    expect(names()).toEqual([REPO_A]);
  });

  it("asks for confirmation before cancelling, and confirming sends cancel_download", async () => {
    const user = userEvent.setup();
    const { model, el } = open({ downloads: [download()] });
    const cancel = within(row(el, REPO_B)).getByRole("button", { name: "Cancel" });
    await user.click(cancel);
    const dialog = within(el).getByRole("alertdialog");
    expect(dialog).toHaveTextContent(REPO_B);
    expect(model.intents()).toHaveLength(0);
    await user.click(within(dialog).getByRole("button", { name: "Cancel download" }));
    expect(within(el).queryByRole("alertdialog")).toBeNull();
    expect(model.intents()).toHaveLength(1);
    expect(model.intents()[0]).toMatchObject({ kind: "cancel_download", repo_id: REPO_B });
    model.reply(true);
    await flush();
    expect(cancel).toHaveFocus();
  });

  it("sends nothing when the user keeps downloading", async () => {
    const user = userEvent.setup();
    const { model, el } = open({ downloads: [download({ state: "Queued", bytes_done: 0 })] });
    const cancel = within(row(el, REPO_B)).getByRole("button", { name: "Cancel" });
    await user.click(cancel);
    await user.click(within(el).getByRole("button", { name: "Keep downloading" }));
    expect(within(el).queryByRole("alertdialog")).toBeNull();
    expect(model.intents()).toHaveLength(0);
    expect(cancel).toHaveFocus();
  });

  it("treats Escape as keep, traps Tab inside the dialog, and restores focus", async () => {
    const user = userEvent.setup();
    const { model, el } = open({ downloads: [download()] });
    const cancel = within(row(el, REPO_B)).getByRole("button", { name: "Cancel" });
    cancel.focus();
    await user.keyboard("{Enter}");
    const dialog = within(el).getByRole("alertdialog");
    const keep = within(dialog).getByRole("button", { name: "Keep downloading" });
    const confirm = within(dialog).getByRole("button", { name: "Cancel download" });
    expect(keep).toHaveFocus(); // the safe choice first
    await user.tab();
    expect(confirm).toHaveFocus();
    await user.tab();
    expect(keep).toHaveFocus();
    await user.tab({ shift: true });
    expect(confirm).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(within(el).queryByRole("alertdialog")).toBeNull();
    expect(model.intents()).toHaveLength(0);
    expect(cancel).toHaveFocus();
  });

  it("sends retry_download from Retry on a failed row", async () => {
    const user = userEvent.setup();
    const { model, el } = open({
      downloads: [download({ state: "Failed", error: "boom", can_cancel: false, can_retry: true })],
    });
    await user.click(within(row(el, REPO_B)).getByRole("button", { name: "Retry" }));
    expect(model.intents()).toHaveLength(1);
    expect(model.intents()[0]).toMatchObject({ kind: "retry_download", repo_id: REPO_B });
  });

  it("focuses itself when download_focus_seq grows, not on first render", () => {
    const { model, el } = open({ download_focus_seq: 5 });
    const r = region(el);
    expect(r).toHaveTextContent("No downloads");
    expect(r).not.toHaveFocus();

    model.update({
      downloads: [download({ state: "Queued", bytes_done: 0 })],
      download_focus_seq: 6,
    });
    expect(r).toHaveFocus();
    expect(within(r).getByRole("group", { name: REPO_B })).toBeVisible();
  });

  it("does not take focus from outside the widget (the user typing in another cell)", () => {
    const { model, el } = open({});
    const cell = document.createElement("textarea");
    document.body.append(cell);
    try {
      cell.focus();
      model.update({
        downloads: [download({ state: "Queued", bytes_done: 0 })],
        download_focus_seq: 1,
      });
      expect(cell).toHaveFocus();
      const toggle = within(region(el)).getByRole("button", { name: /Downloads/ });
      expect(toggle).toHaveAttribute("aria-expanded", "true"); // still opened
      // from inside the widget (the selector that asked), focus moves to the manager
      const select = within(el).getAllByRole("combobox")[0];
      select.focus();
      model.update({ download_focus_seq: 2 });
      expect(region(el)).toHaveFocus();
    } finally {
      cell.remove();
    }
  });

  it("opens even after the user collapsed it when a new download is requested", async () => {
    const user = userEvent.setup();
    const { model, el } = open({ downloads: [download()] });
    const toggle = within(region(el)).getByRole("button", { name: /Downloads/ });
    expect(toggle).toHaveAttribute("aria-expanded", "true");
    await user.click(toggle);
    expect(toggle).toHaveAttribute("aria-expanded", "false");
    expect(within(region(el)).queryByRole("group", { name: REPO_B })).toBeNull();
    model.update({ download_focus_seq: 1 });
    expect(toggle).toHaveAttribute("aria-expanded", "true");
    expect(row(el, REPO_B)).toBeVisible();
  });
});
