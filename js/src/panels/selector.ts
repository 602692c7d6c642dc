// The model selector: a native <select> labelled "Model" for the active conversation,
// the pending target ("Waiting for X (Downloading 45%)"), a brief highlight after an
// auto-switch, and a field to add any repo id. Under it, the target model's details
// (./precision.ts): where it sits while loaded, and the precision with fit labels.

import { h, setAttr, setText, uid } from "../dom";
import { formatBytes, percent } from "../format";
import type { ModelRow } from "../protocol";
import { repoIdProblem } from "../repo-id";
import type { Rpc } from "../rpc";
import type { Store } from "../store";
import { PrecisionPanel } from "./precision";
import { groupByServer, modelStateLabel, serverOf } from "./servers";

/** How long the "switched" highlight stays on before it fades (CSS does the fade). */
export const SWITCH_HIGHLIGHT_MS = 2400;

export class SelectorPanel {
  readonly el: HTMLElement;
  readonly select: HTMLSelectElement;
  private readonly placeholder: HTMLOptionElement;
  private readonly pendingEl: HTMLElement;
  private readonly addInput: HTMLInputElement;
  private readonly addButton: HTMLButtonElement;
  private readonly addError: HTMLElement;
  private readonly details: PrecisionPanel;
  private highlightTimer: ReturnType<typeof setTimeout> | null = null;
  private choosing = false;
  private estimated = false;

  constructor(
    private readonly store: Store,
    private readonly rpc: Rpc,
  ) {
    const selectId = uid("model-select");
    this.placeholder = h("option", { value: "", disabled: true }, ["Choose a model…"]);
    this.select = h("select", { id: selectId, class: "cw-select", "aria-label": "Model" }, [
      this.placeholder,
    ]);
    this.select.addEventListener("change", () => void this.choose(this.select.value));
    this.pendingEl = h("p", { class: "cw-pending", "aria-live": "polite", hidden: true });

    const addErrorId = uid("add-error");
    this.addInput = h("input", {
      type: "text",
      class: "cw-input",
      "aria-label": "Add model by repo id",
      placeholder: "Add a model: org/name",
      autocomplete: "off",
      spellcheck: "false",
      "aria-describedby": addErrorId,
    });
    this.addButton = h("button", { type: "submit", class: "cw-btn" }, ["Add"]);
    this.addError = h("p", { class: "cw-field-error", id: addErrorId, hidden: true });
    const form = h("form", { class: "cw-add-model", "aria-label": "Add a model" }, [
      h("div", { class: "cw-row" }, [this.addInput, this.addButton]),
      this.addError,
    ]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.add();
    });
    this.addInput.addEventListener("input", () => this.showAddError(null));

    this.details = new PrecisionPanel(rpc);
    this.el = h("div", { class: "cw-selector" }, [
      h("label", { class: "cw-label", for: selectId }, ["Model"]),
      h("div", { class: "cw-select-wrap" }, [this.select]),
      this.pendingEl,
      this.details.el,
      form,
    ]);
  }

  /** Redraw from traits: options with state and size, selected target, pending label. */
  update(): void {
    const conv = this.store.activeConversation;
    const target = conv?.requested_model ?? conv?.active_model ?? null;
    const pending = this.store.pending();
    const rows: ModelRow[] = [...this.store.models];
    for (const extra of [conv?.active_model ?? null, target]) {
      if (extra !== null && !rows.some((m) => m.repo_id === extra)) {
        rows.push({
          repo_id: extra,
          name: extra,
          params: "",
          size_bytes: null,
          state: this.store.download(extra)?.state ?? "Queued",
          error: null,
          can_cancel: false,
          can_retry: false,
          action: null,
          residency: {
            placement: [],
            memory_bytes: null,
            can_unload: false,
            freed_bytes: null,
            note: null,
          },
          precision: "auto",
          fit: null,
          server: serverOf(extra),
        });
      }
    }
    const options = new Map<string, HTMLOptionElement>();
    for (const option of Array.from(this.select.options)) {
      if (option !== this.placeholder) options.set(option.value, option);
    }
    let anchor: Element | null = this.placeholder.nextElementSibling;
    const remote: Array<{ server: string; option: HTMLOptionElement }> = [];
    for (const row of rows) {
      let option = options.get(row.repo_id);
      options.delete(row.repo_id);
      if (!option) option = h("option", { value: row.repo_id });
      setText(option, this.optionText(row, conv?.active_model ?? null, pending?.repoId ?? null));
      option.title = row.repo_id;
      if (row.server !== null) remote.push({ server: row.server, option });
      else if (option === anchor) anchor = anchor.nextElementSibling;
      else this.select.insertBefore(option, anchor);
    }
    for (const stale of options.values()) stale.remove();
    groupByServer(this.select, remote); // remote models: one group per server

    if (!this.choosing) {
      this.placeholder.hidden = target !== null;
      this.select.value = target ?? "";
    }
    this.select.disabled = conv === null;
    setText(this.pendingEl, pending?.label ?? "");
    this.pendingEl.hidden = pending === null;
    this.el.classList.toggle("cw-has-pending", pending !== null);
    this.details.update(rows.find((m) => m.repo_id === target));
    if (!this.estimated && this.store.models.length > 0) {
      // Ask once per view for fit labels (computed off the kernel's main thread).
      this.estimated = true;
      void this.rpc.request({ kind: "estimate_fit" }, { patient: true, quiet: true });
    }
  }

  /** Highlight the selector for a moment (after an auto-switch). */
  flashSwitched(): void {
    if (this.highlightTimer !== null) clearTimeout(this.highlightTimer);
    this.el.classList.add("cw-switched");
    this.highlightTimer = setTimeout(() => {
      this.el.classList.remove("cw-switched");
      this.highlightTimer = null;
    }, SWITCH_HIGHLIGHT_MS);
  }

  destroy(): void {
    if (this.highlightTimer !== null) clearTimeout(this.highlightTimer);
  }

  private optionText(row: ModelRow, active: string | null, pending: string | null): string {
    let state: string = row.repo_id === active ? "Active" : modelStateLabel(row);
    const download = this.store.download(row.repo_id);
    if (state === "Downloading" && download) {
      state = `Downloading ${percent(download.bytes_done, download.bytes_total)}%`;
    }
    const parts = [row.name || row.repo_id, state];
    if (row.repo_id === pending) parts[1] = `${state}, pending`;
    if (row.size_bytes !== null) parts.push(formatBytes(row.size_bytes));
    const placement = row.state === "Ready" ? (row.residency?.placement ?? []) : [];
    if (placement.length > 0) parts.push(placement.join(" + "));
    const fit = row.fit?.options.find((o) => o.option === row.precision);
    if (fit && row.state === "Not downloaded") parts.push(fit.label);
    return parts.join(" · ");
  }

  private async choose(repoId: string): Promise<void> {
    if (!repoId) return;
    this.choosing = true;
    await this.rpc.request({ kind: "select_model", repo_id: repoId });
    this.choosing = false;
    this.update(); // show what the kernel decided (reverts a refused choice)
  }

  private async add(): Promise<void> {
    const value = this.addInput.value.trim();
    const problem = repoIdProblem(value);
    if (problem) {
      this.showAddError(problem);
      this.addInput.focus();
      return;
    }
    this.addButton.disabled = true;
    const reply = await this.rpc.request({ kind: "add_model", repo_id: value }, { quiet: true });
    this.addButton.disabled = false;
    if (reply.ok) {
      this.addInput.value = "";
      this.showAddError(null);
    } else {
      this.showAddError(reply.error ?? `Could not add ${value}.`);
      this.addInput.focus();
    }
  }

  private showAddError(message: string | null): void {
    setText(this.addError, message ?? "");
    this.addError.hidden = message === null;
    setAttr(this.addInput, "aria-invalid", message === null ? null : "true");
  }
}
