// The Compare view: pick 2–3 models, type one prompt, and the replies stream side by side.
//
// State comes from the trait `compare_state` (written by the kernel's compare publisher when
// a column's state changes, at most 10 times a second) and from `compare_delta` messages
// (streamed text, chunk `index` of column `column`). Like a chat message row, a column row
// says how many chunks its text holds (`chunks`), so a delta is appended when it is the next
// one and ignored when the row already has it. Only the column a delta belongs to is
// redrawn. Model output goes through the safe markdown renderer (html off).

import { h, setAttr, setText, uid } from "../dom";
import { formatRate } from "../format";
import { setMarkdown } from "../markdown";
import {
  RESYNC_IDLE_MS,
  type CompareColumnRow,
  type CompareDelta,
  type CompareState,
  type Intent,
  type ModelRow,
  type Reply,
} from "../protocol";
import "./compare.css";

/** The model the panel reads: the trait and custom messages (a subset of AnyModel). */
export interface CompareModel {
  get(key: "compare_state"): unknown;
  on(event: string, callback: (...args: any[]) => void): void;
  off(event?: string | null, callback?: ((...args: any[]) => void) | null): void;
}

/** What the panel needs from the rest of the view. */
export interface CompareHost {
  models(): ModelRow[];
  displayName(repoId: string): string;
  request(intent: Intent, options?: { quiet?: boolean; patient?: boolean }): Promise<Reply>;
}

const MAX_COLUMNS = 3;

function isDelta(msg: unknown): msg is CompareDelta {
  return (
    typeof msg === "object" && msg !== null && (msg as { kind?: unknown }).kind === "compare_delta"
  );
}

/** What a column shows as its status: the lifecycle state while its model is on its way. */
export function columnStatus(row: CompareColumnRow): string {
  switch (row.status) {
    case "waiting":
      if (row.state === "Ready") return "Waiting for its turn";
      return row.note ? `${row.state} (${row.note})` : row.state;
    case "streaming":
      return "Generating…";
    case "done":
      return "Done";
    case "stopped":
      return "Stopped";
    case "failed":
      return "Failed";
  }
}

class ColumnView {
  readonly el: HTMLElement;
  readonly voteButton: HTMLButtonElement;
  private readonly title: HTMLElement;
  private readonly status: HTMLElement;
  private readonly stats: HTMLElement;
  private readonly body: HTMLElement;
  private readonly errorEl: HTMLElement;
  private drawn: string | null = null;
  text = "";
  chunks = 0;
  private readonly waiting = new Map<number, string>();

  constructor(
    readonly index: number,
    onVote: (index: number) => void,
  ) {
    const titleId = uid("compare-col");
    this.title = h("h3", { class: "cw-compare-name", id: titleId });
    this.status = h("p", { class: "cw-compare-status" });
    this.stats = h("p", { class: "cw-compare-stats" });
    this.body = h("div", { class: "cw-compare-body cw-markdown" });
    this.errorEl = h("p", { class: "cw-msg-error", hidden: true });
    this.voteButton = h(
      "button",
      { type: "button", class: "cw-btn cw-btn-small cw-compare-vote", hidden: true },
      ["This one is better"],
    );
    this.voteButton.addEventListener("click", () => onVote(this.index));
    this.el = h(
      "article",
      { class: "cw-compare-column", "aria-labelledby": titleId, "data-column": index },
      [
        h("header", { class: "cw-compare-column-head" }, [this.title, this.status, this.stats]),
        this.body,
        this.errorEl,
        this.voteButton,
      ],
    );
  }

  update(row: CompareColumnRow, name: string, state: CompareState): void {
    setText(this.title, name);
    this.voteButton.setAttribute("aria-label", `${name}: this one is better`);
    setText(this.status, columnStatus(row));
    this.el.dataset.status = row.status;
    this.el.dataset.state = row.state;
    setAttr(this.el, "aria-busy", row.status === "streaming" ? "true" : null);
    const stats: string[] = [];
    if (row.time_to_first_token_s !== null) {
      stats.push(`TTFT ${row.time_to_first_token_s.toFixed(2)} s`);
    }
    const rate = formatRate(row.tokens_per_s);
    if (rate) stats.push(rate);
    if (row.new_tokens !== null) {
      stats.push(`${row.new_tokens} token${row.new_tokens === 1 ? "" : "s"}`);
    }
    setText(this.stats, stats.join(" · "));
    this.stats.hidden = stats.length === 0;
    setText(this.errorEl, row.error ?? "");
    this.errorEl.hidden = row.error === null;
    const won = state.vote === row.index;
    this.el.classList.toggle("cw-compare-winner", won);
    this.voteButton.hidden = !(state.blind && state.done && state.vote === null);
    // The trait's text holds `chunks` chunks; deltas already applied beyond it are kept.
    if (row.chunks >= this.chunks || row.status !== "streaming") {
      this.text = row.text;
      this.chunks = row.chunks;
      this.drainWaiting();
    }
    this.draw();
  }

  /** A streamed chunk; true when the column's text changed. */
  delta(index: number, text: string): boolean {
    if (index < this.chunks) return false;
    if (index > this.chunks) {
      this.waiting.set(index, text);
      return false;
    }
    this.text += text;
    this.chunks += 1;
    this.drainWaiting();
    this.draw();
    return true;
  }

  private drainWaiting(): void {
    for (const key of [...this.waiting.keys()]) if (key < this.chunks) this.waiting.delete(key);
    let next = this.waiting.get(this.chunks);
    while (next !== undefined) {
      this.waiting.delete(this.chunks);
      this.text += next;
      this.chunks += 1;
      next = this.waiting.get(this.chunks);
    }
  }

  private draw(): void {
    if (this.drawn === this.text) return;
    this.drawn = this.text;
    setMarkdown(this.body, this.text);
  }
}

export class ComparePanel {
  /** The button that opens and closes the view (mounted in the chat header). */
  readonly toggle: HTMLButtonElement;
  readonly el: HTMLElement;
  readonly prompt: HTMLTextAreaElement;
  readonly startButton: HTMLButtonElement;
  readonly stopButton: HTMLButtonElement;
  readonly blind: HTMLInputElement;
  readonly pickers: HTMLSelectElement[] = [];
  private readonly modeEl: HTMLElement;
  private readonly hint: HTMLElement;
  private readonly columnsEl: HTMLElement;
  private readonly exportBar: HTMLElement;
  private readonly announcer: HTMLElement;
  private columns: ColumnView[] = [];
  private compareId: string | null = null;
  private lastState: CompareState | null = null;
  private readonly onTrait = (): void => this.apply(this.traitState());
  private readonly onMessage = (msg: unknown): void => this.custom(msg);
  private heardAt = Date.now();
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;
  /** Last text exported (tests and the browser test read it). */
  lastExport: string | null = null;

  constructor(
    private readonly model: CompareModel,
    private readonly host: CompareHost,
    private readonly onOpen: (open: boolean) => void = () => {},
  ) {
    const panelId = uid("compare");
    this.toggle = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small cw-compare-toggle",
        "aria-expanded": "false",
        "aria-controls": panelId,
      },
      ["Compare"],
    );
    this.toggle.addEventListener("click", () => this.setOpen(this.el.hidden));

    const fields: HTMLElement[] = [];
    for (let i = 0; i < MAX_COLUMNS; i += 1) {
      const id = uid("compare-model");
      const select = h("select", { id, class: "cw-select cw-compare-pick" });
      select.addEventListener("change", () => this.drawControls());
      this.pickers.push(select);
      fields.push(
        h("div", { class: "cw-compare-field" }, [
          h("label", { for: id }, [i < 2 ? `Model ${i + 1}` : "Model 3 (optional)"]),
          select,
        ]),
      );
    }
    const blindId = uid("compare-blind");
    this.blind = h("input", { type: "checkbox", id: blindId });
    const promptId = uid("compare-prompt");
    const hintId = uid("compare-hint");
    this.prompt = h("textarea", {
      id: promptId,
      class: "cw-textbox cw-compare-prompt",
      rows: 2,
      "aria-describedby": hintId,
    });
    this.prompt.addEventListener("input", () => this.drawControls());
    this.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        void this.start();
      }
    });
    this.hint = h("p", { class: "cw-composer-hint", id: hintId });
    this.startButton = h("button", { type: "button", class: "cw-btn cw-btn-primary" }, [
      "Start comparison",
    ]);
    this.startButton.addEventListener("click", () => void this.start());
    this.stopButton = h("button", { type: "button", class: "cw-btn cw-btn-danger", hidden: true }, [
      "Stop",
    ]);
    this.stopButton.addEventListener("click", () => {
      void this.host.request({ kind: "compare_stop" });
    });
    this.modeEl = h("p", { class: "cw-compare-mode", "aria-live": "polite" });
    this.columnsEl = h("div", { class: "cw-compare-columns" });
    const exportMd = h("button", { type: "button", class: "cw-btn cw-btn-small" }, [
      "Export Markdown",
    ]);
    exportMd.addEventListener("click", () => void this.export("markdown"));
    const exportJson = h("button", { type: "button", class: "cw-btn cw-btn-small" }, [
      "Export JSON",
    ]);
    exportJson.addEventListener("click", () => void this.export("json"));
    this.exportBar = h("div", { class: "cw-compare-export", hidden: true }, [exportMd, exportJson]);
    this.announcer = h("div", { class: "cw-sr-only", "aria-live": "polite" });

    this.el = h(
      "section",
      { class: "cw-compare", id: panelId, "aria-label": "Compare models", hidden: true },
      [
        h("div", { class: "cw-compare-form" }, [
          h("fieldset", { class: "cw-compare-models" }, [
            h("legend", {}, ["Models to compare"]),
            ...fields,
          ]),
          h("div", { class: "cw-compare-field cw-compare-blind" }, [
            this.blind,
            h("label", { for: blindId }, ["Blind: hide the names until I vote"]),
          ]),
          h("label", { for: promptId, class: "cw-compare-label" }, ["Prompt"]),
          this.prompt,
          h("div", { class: "cw-composer-bar" }, [
            this.hint,
            h("div", { class: "cw-composer-actions" }, [this.stopButton, this.startButton]),
          ]),
        ]),
        this.modeEl,
        this.columnsEl,
        this.exportBar,
        this.announcer,
      ],
    );
    model.on("change:compare_state", this.onTrait);
    model.on("msg:custom", this.onMessage);
    this.updateModels();
    this.lastState = this.traitState();
    this.update();
  }

  get open(): boolean {
    return !this.el.hidden;
  }

  setOpen(open: boolean): void {
    this.el.hidden = !open;
    this.toggle.setAttribute("aria-expanded", String(open));
    setText(this.toggle, open ? "Back to chat" : "Compare");
    this.onOpen(open);
    if (open) {
      this.pickers[0]?.focus();
      void this.sync(); // the state as the kernel has it now (a host may have dropped some)
    }
  }

  /** The catalog changed: refill the model pickers, keeping each choice. */
  updateModels(): void {
    const models = this.host.models();
    this.pickers.forEach((select, i) => {
      const chosen = select.value;
      const options = [
        h("option", { value: "" }, [i < 2 ? "Choose a model" : "None"]),
        ...models.map((m) =>
          h("option", { value: m.repo_id }, [
            `${m.name || m.repo_id}${m.state === "Ready" ? "" : ` (${m.state})`}`,
          ]),
        ),
      ];
      select.replaceChildren(...options);
      const keep = models.some((m) => m.repo_id === chosen);
      select.value = keep ? chosen : i < 2 ? (models[i]?.repo_id ?? "") : "";
    });
    this.drawControls();
  }

  destroy(): void {
    this.disposed = true;
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.model.off("change:compare_state", this.onTrait);
    this.model.off("msg:custom", this.onMessage);
  }

  private chosenModels(): string[] {
    return this.pickers.map((s) => s.value).filter((v) => v !== "");
  }

  private running(): boolean {
    const s = this.lastState;
    return s !== null && !s.done;
  }

  private drawControls(): void {
    const models = this.chosenModels();
    let reason: string | null = null;
    if (models.length < 2) reason = "Choose two or three models.";
    else if (new Set(models).size !== models.length) reason = "Choose different models.";
    else if (this.prompt.value.trim() === "") reason = "Type a prompt.";
    else if (this.running()) reason = "A comparison is running: wait for it or press Stop.";
    this.startButton.disabled = reason !== null;
    setText(this.hint, reason ?? "Enter to compare · models not downloaded are queued first");
    this.stopButton.hidden = !this.running();
  }

  private async start(): Promise<void> {
    if (this.startButton.disabled) return;
    const reply = await this.host.request({
      kind: "compare",
      prompt: this.prompt.value,
      models: this.chosenModels(),
      blind: this.blind.checked,
    });
    this.fromReply(reply);
    if (reply.ok) setText(this.announcer, "Comparison started.");
  }

  private async vote(index: number): Promise<void> {
    const reply = await this.host.request({ kind: "compare_vote", column: index });
    this.fromReply(reply);
    if (reply.ok) setText(this.announcer, "Vote saved: the names are shown now.");
  }

  private async export(format: "markdown" | "json"): Promise<void> {
    const reply = await this.host.request({ kind: "compare_export", format });
    if (!reply.ok || reply.export === undefined) return;
    this.lastExport = reply.export;
    const type = format === "json" ? "application/json" : "text/markdown";
    const name = `comparison.${format === "json" ? "json" : "md"}`;
    if (typeof URL.createObjectURL === "function") {
      const url = URL.createObjectURL(new Blob([reply.export], { type }));
      const link = h("a", { href: url, download: name, hidden: true });
      this.el.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    }
    setText(this.announcer, `Exported ${name}.`);
  }

  private traitState(): CompareState | null {
    return (this.model.get("compare_state") ?? null) as CompareState | null;
  }

  /** Take a state from the trait or a reply, unless this view holds a newer one. */
  private apply(state: CompareState | null): void {
    this.heardAt = Date.now();
    const held = this.lastState;
    if (state === null && held !== null) return; // nothing newer than what is shown
    if (state && held && state.id === held.id && state.version < held.version) return;
    this.lastState = state;
    this.update();
  }

  private fromReply(reply: Reply): void {
    if (reply.compare !== undefined) this.apply(reply.compare);
  }

  /** Ask the kernel for the state (answered from its own thread). */
  private async sync(): Promise<void> {
    const reply = await this.host.request({ kind: "compare_sync" }, { quiet: true, patient: true });
    if (!this.disposed) this.fromReply(reply);
  }

  /** While a comparison runs, a second of silence asks for the state again. */
  private armPoll(): void {
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    if (this.disposed || !this.running()) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      if (Date.now() - this.heardAt >= RESYNC_IDLE_MS) void this.sync();
      this.armPoll();
    }, RESYNC_IDLE_MS);
  }

  /** Redraw from the state held. */
  update(): void {
    const state = this.lastState;
    this.drawControls();
    this.armPoll();
    if (state === null) {
      setText(this.modeEl, "");
      this.columnsEl.replaceChildren();
      this.columns = [];
      this.exportBar.hidden = true;
      return;
    }
    if (state.id !== this.compareId || this.columns.length !== state.columns.length) {
      this.compareId = state.id;
      this.columns = state.columns.map((_, i) => new ColumnView(i, (n) => void this.vote(n)));
      this.columnsEl.replaceChildren(...this.columns.map((c) => c.el));
    }
    setText(this.modeEl, this.modeText(state));
    state.columns.forEach((row, i) => {
      const name = row.model !== null ? this.host.displayName(row.model) : row.label;
      this.columns[i]?.update(row, name, state);
    });
    this.exportBar.hidden = !state.done;
  }

  private modeText(state: CompareState): string {
    if (state.mode === null) return "Checking whether these models fit in memory together…";
    const how = state.mode === "sequential" ? "One after another" : "At the same time";
    const blind = state.blind && state.vote === null ? " Names are hidden until you vote." : "";
    return `${how}: ${state.reason ?? ""}${blind}`;
  }

  private custom(msg: unknown): void {
    if (!isDelta(msg) || msg.compare_id !== this.compareId) return;
    this.heardAt = Date.now();
    this.columns[msg.column]?.delta(msg.index, msg.text);
  }
}
