import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import type { CompareColumnRow, CompareState } from "../src/protocol";
import { columnStatus } from "../src/panels/compare";
import { REPO_A, REPO_B, flush, mountPerTest, type FakeModel } from "./fake-model";

const open = mountPerTest();

function column(overrides: Partial<CompareColumnRow> = {}): CompareColumnRow {
  return {
    index: 0,
    label: "Model A",
    model: REPO_A,
    state: "Ready",
    note: null,
    status: "waiting",
    text: "",
    chunks: 0,
    time_to_first_token_s: null,
    tokens_per_s: null,
    new_tokens: null,
    error: null,
    ...overrides,
  };
}

function compareState(overrides: Partial<CompareState> = {}): CompareState {
  return {
    id: "cmp1",
    version: 1,
    prompt: "Say hi",
    blind: false,
    mode: "sequential",
    reason: "They fit together, but on the CPU they would share the same cores.",
    done: false,
    vote: null,
    saved: false,
    columns: [
      column(),
      column({ index: 1, label: "Model B", model: REPO_B, state: "Downloading", note: "45%" }),
    ],
    ...overrides,
  };
}

/** Kernel side: write trait compare_state (outside WidgetState) and fire its change. */
function setCompare(model: FakeModel, state: CompareState | null): void {
  (model.state as unknown as Record<string, unknown>).compare_state = state;
  model.emit("change:compare_state");
}

function compareDelta(model: FakeModel, column: number, index: number, text: string): void {
  model.emit("msg:custom", { kind: "compare_delta", compare_id: "cmp1", column, index, text }, []);
}

function openCompare(el: HTMLElement): HTMLElement {
  const toggle = within(el).getByRole("button", { name: "Compare" });
  toggle.click();
  return within(el).getByRole("region", { name: "Compare models" });
}

describe("compare view", () => {
  it("opens from the chat header, hiding the messages, and closes again", async () => {
    const { el } = open();
    const user = userEvent.setup();
    const toggle = within(el).getByRole("button", { name: "Compare" });
    expect(toggle).toHaveAttribute("aria-expanded", "false");
    const region = el.querySelector<HTMLElement>(".cw-compare")!;
    expect(region.hidden).toBe(true);
    toggle.focus();
    await user.keyboard("{Enter}");
    expect(region.hidden).toBe(false);
    expect(toggle).toHaveAttribute("aria-expanded", "true");
    expect(el.querySelector(".cw-chat")).toHaveClass("cw-chat-comparing");
    // focus moves into the view: the first model picker
    expect(within(region).getByLabelText("Model 1")).toHaveFocus();
    within(el).getByRole("button", { name: "Back to chat" }).click();
    expect(region.hidden).toBe(true);
    expect(el.querySelector(".cw-chat")).not.toHaveClass("cw-chat-comparing");
  });

  it("sends one compare intent with the chosen models, the prompt and blind", async () => {
    const { model, el } = open();
    const region = openCompare(el);
    const user = userEvent.setup();
    const start = within(region).getByRole("button", { name: "Start comparison" });
    expect(start).toBeDisabled(); // no prompt yet
    expect(within(region).getByLabelText("Model 1")).toHaveValue(REPO_A);
    expect(within(region).getByLabelText("Model 2")).toHaveValue(REPO_B);
    // a model not downloaded says so in the picker
    expect(within(region).getAllByRole("option", { name: /Qwen2.5.*Not downloaded/ })).toHaveLength(
      3,
    );
    await user.click(within(region).getByLabelText("Blind: hide the names until I vote"));
    await user.type(within(region).getByLabelText("Prompt"), "Say hi{Enter}");
    expect(model.intents().at(-1)).toMatchObject({
      kind: "compare",
      prompt: "Say hi",
      models: [REPO_A, REPO_B],
      blind: true,
    });
  });

  it("refuses the same model twice", async () => {
    const { el } = open();
    const region = openCompare(el);
    const user = userEvent.setup();
    await user.selectOptions(within(region).getByLabelText("Model 2"), REPO_A);
    await user.type(within(region).getByLabelText("Prompt"), "Hi");
    expect(within(region).getByRole("button", { name: "Start comparison" })).toBeDisabled();
    expect(region).toHaveTextContent("Choose different models.");
  });

  it("shows each column's lifecycle state until Ready, then streams deltas into it", () => {
    const { model, el } = open();
    const region = openCompare(el);
    setCompare(model, compareState());
    const columns = region.querySelectorAll<HTMLElement>(".cw-compare-column");
    expect(columns).toHaveLength(2);
    expect(columns[1]).toHaveTextContent("Downloading (45%)");
    expect(columns[1]!.dataset.state).toBe("Downloading");
    expect(region.querySelector(".cw-compare-mode")).toHaveTextContent("One after another");
    setCompare(
      model,
      compareState({
        columns: [
          column({ status: "streaming", text: "He", chunks: 1 }),
          column({ index: 1, label: "Model B", model: REPO_B, state: "Queued" }),
        ],
      }),
    );
    const body = columns[0]!.querySelector(".cw-compare-body")!;
    expect(body).toHaveTextContent("He");
    expect(columns[0]).toHaveAttribute("aria-busy", "true");
    compareDelta(model, 0, 0, "He"); // already in the row: ignored
    compareDelta(model, 0, 2, " **there**"); // ahead: waits for chunk 1
    expect(body).toHaveTextContent(/^He$/);
    compareDelta(model, 0, 1, "llo");
    expect(body.textContent!.trim()).toBe("Hello there");
    expect(body.querySelector("strong")).toHaveTextContent("there");
    expect(columns[1]).toHaveTextContent("Queued");
    // the same column node is kept (updated in place)
    expect(region.querySelectorAll(".cw-compare-column")[0]).toBe(columns[0]);
  });

  it("shows TTFT, tokens/s and the token count when a column is done", () => {
    const { model, el } = open();
    const region = openCompare(el);
    setCompare(
      model,
      compareState({
        done: true,
        columns: [
          column({
            status: "done",
            text: "Hi",
            time_to_first_token_s: 0.123,
            tokens_per_s: 18.25,
            new_tokens: 42,
          }),
          column({ index: 1, label: "Model B", model: REPO_B, status: "failed", error: "Boom" }),
        ],
      }),
    );
    const [a, b] = region.querySelectorAll<HTMLElement>(".cw-compare-column");
    expect(a).toHaveTextContent("TTFT 0.12 s");
    expect(a).toHaveTextContent("18.3 tok/s");
    expect(a).toHaveTextContent("42 tokens");
    expect(a).toHaveTextContent("SmolLM2 135M Instruct");
    expect(b).toHaveTextContent("Failed");
    expect(b).toHaveTextContent("Boom");
    expect(within(region).getByRole("button", { name: "Export Markdown" })).toBeVisible();
  });

  it("renders model output safely: no HTML injection", () => {
    const { model, el } = open();
    const region = openCompare(el);
    setCompare(
      model,
      compareState({
        columns: [
          column({ status: "done", text: '<img src=x onerror="alert(1)"><script>x</script>' }),
          column({ index: 1, label: "Model B", model: REPO_B, status: "done", text: "ok" }),
        ],
      }),
    );
    expect(region.querySelector("img")).toBeNull();
    expect(region.querySelector("script")).toBeNull();
    expect(region.querySelector(".cw-compare-body")).toHaveTextContent("<img src=x");
  });

  it("blind mode hides names, offers a labelled vote, and reveals after it", async () => {
    const { model, el } = open();
    const region = openCompare(el);
    const user = userEvent.setup();
    const hidden = compareState({
      blind: true,
      done: true,
      columns: [
        column({ model: null, status: "done", text: "one" }),
        column({ index: 1, label: "Model B", model: null, status: "done", text: "two" }),
      ],
    });
    setCompare(model, hidden);
    const columns = region.querySelector(".cw-compare-columns")!;
    expect(columns).not.toHaveTextContent("SmolLM2");
    expect(columns).toHaveTextContent("Model A");
    expect(region.querySelector(".cw-compare-mode")).toHaveTextContent("Names are hidden");
    const vote = within(region).getByRole("button", { name: "Model B: this one is better" });
    await user.click(vote);
    expect(model.intents().at(-1)).toMatchObject({ kind: "compare_vote", column: 1 });
    setCompare(
      model,
      compareState({
        blind: true,
        done: true,
        vote: 1,
        saved: true,
        columns: [
          column({ status: "done", text: "one" }),
          column({ index: 1, label: "Model B", model: REPO_B, status: "done", text: "two" }),
        ],
      }),
    );
    expect(columns).toHaveTextContent("Qwen2.5 0.5B Instruct");
    expect(region.querySelectorAll(".cw-compare-vote:not([hidden])")).toHaveLength(0);
    expect(region.querySelector(".cw-compare-winner")).toHaveTextContent("two");
  });

  it("exports through the kernel and keeps the text", async () => {
    const { model, el } = open();
    const region = openCompare(el);
    setCompare(
      model,
      compareState({
        done: true,
        columns: [column({ status: "done" }), column({ index: 1, status: "done" })],
      }),
    );
    within(region).getByRole("button", { name: "Export Markdown" }).click();
    expect(model.intents().at(-1)).toMatchObject({ kind: "compare_export", format: "markdown" });
    model.reply(true, undefined, undefined, { export: "## Comparison" });
    await flush();
    expect(region).toHaveTextContent("Exported comparison.md.");
  });

  it("asks the kernel for the state after a second of silence while running", async () => {
    vi.useFakeTimers();
    try {
      const { model, el } = open();
      const region = openCompare(el);
      setCompare(model, compareState({ version: 5 }));
      const polls = () => model.sent.filter((r) => r.kind === "compare_sync").length;
      const before = polls(); // opening the view asks once
      vi.advanceTimersByTime(1100);
      expect(polls()).toBe(before + 1);
      const request = model.sent.filter((r) => r.kind === "compare_sync").at(-1)!;
      // a host dropped the trait updates: the reply brings the finished comparison
      const done = compareState({
        version: 9,
        done: true,
        columns: [column({ status: "done", text: "All of it" }), column({ index: 1 })],
      });
      model.reply(true, undefined, request.id, { compare: done });
      await flush();
      expect(region.querySelector(".cw-compare-body")).toHaveTextContent("All of it");
      // an older state arriving later is ignored
      setCompare(model, compareState({ version: 6 }));
      expect(region.querySelector(".cw-compare-body")).toHaveTextContent("All of it");
      vi.advanceTimersByTime(5000);
      expect(polls()).toBe(before + 1); // done: no more polling
    } finally {
      vi.useRealTimers();
    }
  });

  it("words each column status", () => {
    expect(columnStatus(column({ status: "waiting", state: "Queued" }))).toBe("Queued");
    expect(columnStatus(column({ status: "waiting", state: "Ready" }))).toBe(
      "Waiting for its turn",
    );
    expect(columnStatus(column({ status: "streaming" }))).toBe("Generating…");
  });
});
