import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import { SWITCH_HIGHLIGHT_MS } from "../src/panels/selector";
import { TOAST_MS } from "../src/panels/toast";
import {
  REPO_A,
  REPO_B,
  conversation,
  download,
  flush,
  modelRow,
  mountPerTest,
} from "./fake-model";

const open = mountPerTest();
afterEach(() => {
  vi.useRealTimers();
});

function optionTexts(select: HTMLSelectElement): string[] {
  return Array.from(select.options)
    .filter((o) => !o.hidden)
    .map((o) => o.textContent ?? "");
}

describe("model selector", () => {
  it("lists models with state and size and selects the conversation's model", () => {
    const { el } = open();
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    expect(optionTexts(select)).toEqual([
      "SmolLM2 135M Instruct · Active · 269 MB",
      "Qwen2.5 0.5B Instruct · Not downloaded · 988 MB",
    ]);
    expect(select.value).toBe(REPO_A);
  });

  it("updates option states in place as the kernel reports them", () => {
    const { model, el } = open();
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    const qwenOption = select.options[2];
    for (const state of ["Queued", "Downloading", "Compiling", "Ready", "Failed"] as const) {
      model.update({
        models: [modelRow(), modelRow({ repo_id: REPO_B, name: "Qwen", size_bytes: null, state })],
      });
      expect(qwenOption.textContent).toBe(`Qwen · ${state}`);
    }
    expect(select.options[2]).toBe(qwenOption);
  });

  it("shows download progress in a downloading model's option", () => {
    const { el } = open({
      models: [modelRow(), modelRow({ repo_id: REPO_B, name: "Qwen", state: "Downloading" })],
      downloads: [download()],
    });
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    expect(select.options[2]).toHaveTextContent("Qwen · Downloading 45% · 269 MB");
  });

  it("sends select_model when the user picks a model", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const select = within(el).getByRole("combobox", { name: "Model" });
    await user.selectOptions(select, REPO_B);
    expect(model.intents()).toHaveLength(1);
    expect(model.intents()[0]).toMatchObject({ kind: "select_model", repo_id: REPO_B });
  });

  it("reverts the choice and shows the error when the kernel refuses it", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    await user.selectOptions(select, REPO_B);
    model.reply(false, "not enough disk space for Qwen/Qwen2.5-0.5B-Instruct");
    await flush();
    expect(select.value).toBe(REPO_A);
    expect(within(el).getByRole("alert")).toHaveTextContent("not enough disk space");
  });

  it("shows the pending target with its download progress", () => {
    const { model, el } = open({
      conversations: [conversation({ active_model: REPO_A, requested_model: REPO_B })],
      downloads: [download()],
    });
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    expect(select.value).toBe(REPO_B);
    expect(select.selectedOptions[0].textContent).toBe(
      "Qwen2.5 0.5B Instruct · Not downloaded, pending · 988 MB",
    );
    const pending = el.querySelector(".cw-pending")!;
    expect(pending).toBeVisible();
    expect(pending).toHaveTextContent("Waiting for Qwen2.5 0.5B Instruct (Downloading 45%)");

    model.update({ downloads: [download({ state: "Compiling", bytes_done: 1_000_000_000 })] });
    expect(pending).toHaveTextContent("Waiting for Qwen2.5 0.5B Instruct (Compiling)");

    model.update({
      conversations: [conversation({ active_model: REPO_B, requested_model: REPO_B })],
    });
    expect(pending).not.toBeVisible();
  });

  it("toasts and highlights only when last_switch.seq grows after the first render", () => {
    vi.useFakeTimers();
    const first = { seq: 3, conversation_id: "c1", repo_id: REPO_A };
    const { model, el } = open({ last_switch: first });
    expect(within(el).queryByRole("status")).toBeNull();

    model.update({ last_switch: { ...first } }); // same seq: nothing new
    expect(within(el).queryByRole("status")).toBeNull();

    model.update({ last_switch: { seq: 4, conversation_id: "c1", repo_id: REPO_B } });
    expect(within(el).getByRole("status")).toHaveTextContent(`Switched to ${REPO_B}`);
    const selector = el.querySelector(".cw-selector")!;
    expect(selector).toHaveClass("cw-switched");

    vi.advanceTimersByTime(SWITCH_HIGHLIGHT_MS);
    expect(selector).not.toHaveClass("cw-switched");
    vi.advanceTimersByTime(TOAST_MS);
    expect(within(el).queryByRole("status")).toBeNull();
  });

  it("gives no toast for a switch in another conversation", () => {
    const { model, el } = open({
      conversations: [conversation(), conversation({ id: "c2", title: "Other" })],
    });
    model.update({ last_switch: { seq: 1, conversation_id: "c2", repo_id: REPO_B } });
    expect(within(el).queryByRole("status")).toBeNull();
    expect(el.querySelector(".cw-selector")).not.toHaveClass("cw-switched");
  });

  it("validates a typed repo id before sending add_model", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const input = within(el).getByRole("textbox", { name: "Add model by repo id" });
    const add = within(el).getByRole("button", { name: "Add" });

    await user.type(input, "not a repo id");
    await user.click(add);
    expect(model.intents()).toHaveLength(0);
    expect(input).toHaveAttribute("aria-invalid", "true");
    expect(input).toHaveAccessibleDescription(/org\/name/);

    await user.clear(input);
    await user.type(input, "org/bad..name{Enter}");
    expect(model.intents()).toHaveLength(0);

    await user.clear(input);
    expect(input).not.toHaveAttribute("aria-invalid");
    await user.type(input, "  my-org/My_Model-1.5B  {Enter}");
    expect(model.intents()).toHaveLength(1);
    expect(model.intents()[0]).toMatchObject({
      kind: "add_model",
      repo_id: "my-org/My_Model-1.5B",
    });
    model.reply(true);
    await flush();
    expect(input).toHaveValue("");
  });

  it("shows the kernel's reason when add_model is refused and keeps the text", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const input = within(el).getByRole("textbox", { name: "Add model by repo id" });
    await user.type(input, "org/missing{Enter}");
    model.reply(false, "org/missing was not found on the hub");
    await flush();
    expect(input).toHaveValue("org/missing");
    expect(input).toHaveAccessibleDescription("org/missing was not found on the hub");
    expect(within(el).queryByRole("alert")).toBeNull(); // shown inline, not twice
  });
});
