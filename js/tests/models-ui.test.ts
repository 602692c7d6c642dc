import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import type { FitInfo } from "../src/protocol";
import {
  REPO_A,
  REPO_B,
  chat,
  conversation,
  download,
  flush,
  message,
  modelRow,
  mountPerTest,
  residency,
} from "./fake-model";

const open = mountPerTest();

function region(el: HTMLElement): HTMLElement {
  return within(el).getByRole("region", { name: "Downloads" });
}
function row(el: HTMLElement, repoId: string): HTMLElement {
  return within(region(el)).getByRole("group", { name: repoId });
}

const FIT: FitInfo = {
  status: "ready",
  context_tokens: 4096,
  source: "hub",
  options: [
    {
      option: "auto",
      verdict: "cpu",
      label: "CPU only",
      required_bytes: 400_000_000,
      budget_bytes: 8_000_000_000,
      note: "",
    },
    {
      option: "bfloat16",
      verdict: "cpu",
      label: "CPU only",
      required_bytes: 400_000_000,
      budget_bytes: 8_000_000_000,
      note: "",
    },
    {
      option: "float16",
      verdict: "cpu",
      label: "CPU only",
      required_bytes: 400_000_000,
      budget_bytes: 8_000_000_000,
      note: "",
    },
    {
      option: "float32",
      verdict: "none",
      label: "Won't fit",
      required_bytes: 9_000_000_000,
      budget_bytes: 8_000_000_000,
      note: "needs more than the budget",
    },
  ],
  absent: [
    { option: "8bit", reason: "need bitsandbytes and a CUDA GPU; neither is present" },
    { option: "4bit", reason: "need bitsandbytes and a CUDA GPU; neither is present" },
  ],
  note: null,
};

describe("loaded model rows", () => {
  it("show where the model sits and an Unload button that sends unload_model", async () => {
    const user = userEvent.setup();
    const loaded = residency({ placement: ["CPU"], memory_bytes: 540_000_000, can_unload: true });
    const { model, el } = open({
      downloads: [download({ state: "Ready", can_cancel: false, residency: loaded })],
    });
    const r = row(el, REPO_B);
    expect(r).toHaveTextContent("On CPU · 540 MB");
    await user.click(within(r).getByRole("button", { name: "Unload" }));
    expect(model.intents().at(-1)).toMatchObject({ kind: "unload_model", repo_id: REPO_B });
    model.reply(true);
    model.update({
      downloads: [
        download({
          state: "Downloaded",
          can_cancel: false,
          residency: residency({ freed_bytes: 540_000_000 }),
        }),
      ],
    });
    await flush();
    expect(r).toHaveTextContent("Unloaded: freed 540 MB");
    expect(within(r).queryByRole("button", { name: "Unload" })).toBeNull();
  });

  it("show the GPU and disk offload parts of a split model", () => {
    const split = residency({
      placement: ["GPU 0", "CPU", "disk offload"],
      memory_bytes: 2_000_000_000,
      can_unload: true,
    });
    const { el } = open({ downloads: [download({ state: "Ready", residency: split })] });
    expect(row(el, REPO_B)).toHaveTextContent("On GPU 0 + CPU + disk offload · 2.00 GB");
  });

  it("show the lifecycle note (waiting for a reply on another model)", () => {
    const { el } = open({
      downloads: [
        download({
          state: "Compiling",
          residency: residency({ note: `waiting for the reply on ${REPO_A} to finish` }),
        }),
      ],
    });
    expect(row(el, REPO_B)).toHaveTextContent(`waiting for the reply on ${REPO_A} to finish`);
  });
});

describe("failed rows", () => {
  it("a gated row offers Add a token, no Retry; the token goes once and is not kept", async () => {
    const user = userEvent.setup();
    const { model, el } = open({
      downloads: [
        download({
          state: "Failed",
          error: "gated/tiny is gated: pass a token that can see it.",
          can_cancel: false,
          can_retry: false,
          action: "Add a token",
        }),
      ],
    });
    const r = row(el, REPO_B);
    expect(within(r).queryByRole("button", { name: "Retry" })).toBeNull();
    await user.click(within(r).getByRole("button", { name: "Add a token" }));
    const field = within(r).getByLabelText("Hugging Face token");
    expect(field).toHaveAttribute("type", "password");
    expect(field).toHaveFocus();
    await user.type(field, "hf_secret123{Enter}");
    const sent = model.intents().at(-1);
    expect(sent).toMatchObject({ kind: "set_token", token: "hf_secret123" });
    expect((field as HTMLInputElement).value).toBe(""); // cleared at once
    model.reply(true);
    await flush();
    expect(field.closest("form")).not.toBeVisible(); // form hidden once accepted
    expect(el.innerHTML).not.toContain("hf_secret123");
  });

  it("a won't-fit row offers Free memory, which sends free_memory", async () => {
    const user = userEvent.setup();
    const { model, el } = open({
      downloads: [
        download({
          state: "Failed",
          error: "Too large for the memory budget",
          can_cancel: false,
          can_retry: false,
          action: "Free memory",
        }),
      ],
    });
    const r = row(el, REPO_B);
    expect(within(r).queryByRole("button", { name: "Retry" })).toBeNull();
    await user.click(within(r).getByRole("button", { name: "Free memory" }));
    expect(model.intents().at(-1)).toMatchObject({ kind: "free_memory", repo_id: REPO_B });
  });

  it("an action the widget cannot do is shown as text only", () => {
    const { el } = open({
      downloads: [download({ state: "Failed", can_retry: false, action: "Pick another model" })],
    });
    const r = row(el, REPO_B);
    expect(r).toHaveTextContent("What to do: Pick another model");
    expect(within(r).queryAllByRole("button")).toHaveLength(0);
  });
});

describe("precision and fit labels", () => {
  function target(fit: FitInfo | null, precision = "auto") {
    return open({
      models: [
        modelRow(),
        modelRow({
          repo_id: REPO_B,
          name: "Qwen",
          state: "Not downloaded",
          size_bytes: null,
          fit,
          precision,
        }),
      ],
      conversations: [conversation({ active_model: REPO_A, requested_model: REPO_B })],
    });
  }

  it("asks the kernel once for estimates", () => {
    const { model } = target(null);
    expect(model.sent.filter((r) => r.kind === "estimate_fit")).toHaveLength(1);
  });

  it("labels every precision with its verdict and size, before download", () => {
    const { el } = target(FIT);
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Precision" });
    const texts = Array.from(select.options).map((o) => o.textContent);
    expect(texts).toEqual([
      "auto (checkpoint) — CPU only · needs 400 MB",
      "bfloat16 — CPU only · needs 400 MB",
      "float16 — CPU only · needs 400 MB",
      "float32 — Won't fit · needs 9.00 GB",
      "8-bit — unavailable",
      "4-bit — unavailable",
    ]);
    expect(select.options[4].disabled).toBe(true);
    expect(el).toHaveTextContent("Not offered — 8-bit, 4-bit: need bitsandbytes and a CUDA GPU");
    expect(el.querySelector(".cw-fit-summary")).toHaveTextContent(
      "CPU only · needs 400 MB (memory budget 8.00 GB)",
    );
    const model = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    expect(model.options[2]).toHaveTextContent("Qwen · Not downloaded, pending · CPU only");
  });

  it("sends set_precision when the user changes it, and follows the kernel's choice", async () => {
    const user = userEvent.setup();
    const { model, el } = target(FIT);
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Precision" });
    await user.selectOptions(select, "float32");
    expect(model.intents().at(-1)).toMatchObject({
      kind: "set_precision",
      repo_id: REPO_B,
      option: "float32",
    });
    model.reply(true);
    model.update({
      models: [
        modelRow(),
        modelRow({
          repo_id: REPO_B,
          name: "Qwen",
          state: "Not downloaded",
          fit: FIT,
          precision: "float32",
        }),
      ],
    });
    await flush();
    expect(select.value).toBe("float32");
    expect(el.querySelector(".cw-fit-summary")).toHaveTextContent("Won't fit · needs 9.00 GB");
  });

  it("says when the estimate is pending or unavailable", () => {
    const pending: FitInfo = { ...FIT, status: "pending", options: [], absent: [], note: null };
    const { el, model } = target(pending);
    expect(el.querySelector(".cw-fit-summary")).toHaveTextContent("Estimating whether it fits…");
    model.update({
      models: [
        modelRow(),
        modelRow({
          repo_id: REPO_B,
          fit: { ...pending, status: "unavailable", note: "No estimate: not found" },
        }),
      ],
    });
    expect(el.querySelector(".cw-fit-summary")).toHaveTextContent("No estimate: not found");
  });

  it("shows where a loaded target sits in the selector", () => {
    const { el } = open({
      models: [
        modelRow({
          residency: residency({ placement: ["CPU"], memory_bytes: 120_000_000, can_unload: true }),
        }),
      ],
    });
    const model = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    expect(model.options[1]).toHaveTextContent("SmolLM2 135M Instruct · Active · 269 MB · CPU");
    expect(el.querySelector(".cw-residency")).toHaveTextContent("On CPU · 120 MB");
  });
});

describe("a reply whose model loads again", () => {
  it("shows Loading model… until the model is back, then Generating…", () => {
    const reply = (note: string | null) =>
      message({
        id: "a1",
        role: "assistant",
        content: "",
        status: "streaming",
        model: REPO_A,
        note,
      });
    const { model, el } = open({ ...chat([message(), reply("Loading model…")]), generating: true });
    const meta = () => el.querySelector('[data-id="a1"] .cw-msg-meta');
    expect(meta()).toHaveTextContent("Loading model…");
    model.update({ ...chat([message(), reply(null)]) });
    expect(meta()).toHaveTextContent("Generating…");
    expect(meta()).not.toHaveTextContent("Loading model…");
  });
});
