// The download manager: a collapsible region with one row per download, updated in
// place (keyed by repo id) so progress ticks never steal focus from a row's buttons.

import { activeElementOf, h, setAttr, setText, uid } from "../dom";
import { formatBytes, formatEta, formatSpeed, percent } from "../format";
import type { DownloadRow, Reply, Residency } from "../protocol";
import type { Rpc } from "../rpc";
import type { UiState } from "../ui-state";
import type { Dialogs } from "./dialog";

// What a row offers (Cancel, Retry, Unload, the failure's action) comes with the row from
// the kernel's lifecycle table: no lifecycle rules here. Loaded rows say where the model
// sits ("CPU", "GPU 0", "disk offload") and offer Unload; an unloaded row says what it freed.
// A failure Retry cannot help offers its action: "Add a token" opens a password field (the
// token goes to the kernel once, in a set_token request, and is kept nowhere here), "Free
// memory" unloads idle models and tries again.

/** "On CPU · 540 MB" for a loaded model; "Unloaded: freed 540 MB" after an unload. */
export function residencyText(row: { state: string; residency?: Residency }): string {
  const r = row.residency;
  if (!r) return "";
  if (row.state === "Ready" && r.placement.length > 0) {
    const size = r.memory_bytes !== null ? ` · ${formatBytes(r.memory_bytes)}` : "";
    return `On ${r.placement.join(" + ")}${size}`;
  }
  if (row.state !== "Ready" && r.freed_bytes !== null) {
    return `Unloaded: freed ${formatBytes(r.freed_bytes)}`;
  }
  return "";
}

/** CSS-friendly state name: "Not downloaded" -> "not-downloaded". */
export function stateClass(state: string): string {
  return state.toLowerCase().replace(/\s+/g, "-");
}

/** Progress in percent a row shows: Ready and Compiling rows are complete. */
export function rowPercent(row: DownloadRow): number {
  if (row.state === "Ready" || row.state === "Compiling") return 100;
  return percent(row.bytes_done, row.bytes_total);
}

/** Whether `button` waits for the kernel's answer to its last press. */
function isBusy(button: HTMLButtonElement): boolean {
  return button.getAttribute("aria-disabled") === "true";
}

/**
 * Mark `button` busy while `work` runs, so a second press sends nothing twice. It is
 * aria-disabled, not disabled: a disabled button drops keyboard focus to the page.
 */
async function whileBusy(button: HTMLButtonElement, work: () => Promise<unknown>): Promise<void> {
  if (isBusy(button)) return;
  button.setAttribute("aria-disabled", "true");
  try {
    await work();
  } finally {
    button.removeAttribute("aria-disabled");
  }
}

class DownloadRowView {
  readonly el: HTMLElement;
  private readonly stateEl: HTMLElement;
  private readonly bar: HTMLElement;
  private readonly fill: HTMLElement;
  private readonly bytesEl: HTMLElement;
  private readonly speedEl: HTMLElement;
  private readonly etaEl: HTMLElement;
  private readonly fileEl: HTMLElement;
  private readonly errorEl: HTMLElement;
  private readonly actionEl: HTMLElement;
  private readonly cancelButton: HTMLButtonElement;
  private readonly retryButton: HTMLButtonElement;
  private readonly unloadButton: HTMLButtonElement;
  private readonly actionButton: HTMLButtonElement;
  private readonly residencyEl: HTMLElement;
  private readonly noteEl: HTMLElement;
  private readonly tokenForm: HTMLFormElement;
  private readonly tokenInput: HTMLInputElement;
  private readonly tokenError: HTMLElement;
  private row: DownloadRow;

  constructor(
    row: DownloadRow,
    private readonly manager: DownloadsPanel,
  ) {
    this.row = row;
    const nameId = uid("dl-name");
    this.stateEl = h("span", { class: "cw-state-pill" });
    this.fill = h("div", { class: "cw-progress-fill" });
    this.bar = h(
      "div",
      {
        class: "cw-progress",
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": 0,
        "aria-label": `${row.repo_id} progress`,
      },
      [this.fill],
    );
    this.bytesEl = h("span", { class: "cw-dl-bytes" });
    this.speedEl = h("span", { class: "cw-dl-speed" });
    this.etaEl = h("span", { class: "cw-dl-eta" });
    this.fileEl = h("div", { class: "cw-dl-file" });
    this.errorEl = h("p", { class: "cw-dl-error", hidden: true });
    this.actionEl = h("p", { class: "cw-dl-action", hidden: true });
    this.cancelButton = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small",
        "aria-label": "Cancel",
        "aria-describedby": nameId,
        title: `Cancel the download of ${row.repo_id}`,
      },
      ["Cancel"],
    );
    this.retryButton = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small cw-btn-primary",
        "aria-label": "Retry",
        "aria-describedby": nameId,
        title: `Retry the download of ${row.repo_id}`,
      },
      ["Retry"],
    );
    this.unloadButton = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small",
        "aria-label": "Unload",
        "aria-describedby": nameId,
        title: `Unload ${row.repo_id} from memory (it stays downloaded)`,
      },
      ["Unload"],
    );
    this.actionButton = h("button", {
      type: "button",
      class: "cw-btn cw-btn-small cw-btn-primary",
      "aria-describedby": nameId,
    });
    this.residencyEl = h("span", { class: "cw-dl-residency" });
    this.noteEl = h("p", { class: "cw-dl-note", hidden: true });
    const tokenErrorId = uid("token-error");
    this.tokenInput = h("input", {
      type: "password",
      class: "cw-input",
      "aria-label": "Hugging Face token",
      placeholder: "hf_…",
      autocomplete: "off",
      spellcheck: "false",
      "aria-describedby": tokenErrorId,
    });
    this.tokenError = h("p", { class: "cw-field-error", id: tokenErrorId, hidden: true });
    this.tokenForm = h(
      "form",
      { class: "cw-token-form", "aria-label": `Token for ${row.repo_id}`, hidden: true },
      [
        h("div", { class: "cw-row" }, [
          this.tokenInput,
          h("button", { type: "submit", class: "cw-btn cw-btn-small cw-btn-primary" }, [
            "Use token",
          ]),
        ]),
        this.tokenError,
      ],
    );
    this.tokenForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.submitToken();
    });
    this.unloadButton.addEventListener("click", () => {
      void this.manager.unload(this.row.repo_id, this.unloadButton);
    });
    this.actionButton.addEventListener("click", () => {
      if (this.row.action === "Add a token") {
        this.tokenForm.hidden = false;
        this.tokenInput.focus();
      } else if (this.row.action === "Free memory") {
        void this.manager.freeMemory(this.row.repo_id, this.actionButton);
      }
    });
    this.cancelButton.addEventListener("click", () => {
      void this.manager.cancel(this.row.repo_id, this.cancelButton);
    });
    this.retryButton.addEventListener("click", () => {
      void this.manager.retry(this.row.repo_id, this.retryButton);
    });
    this.el = h("div", { class: "cw-dl-row", role: "group", "aria-label": row.repo_id }, [
      h("div", { class: "cw-dl-head" }, [
        h("span", { class: "cw-dl-name", id: nameId, title: row.repo_id }, [row.repo_id]),
        this.stateEl,
      ]),
      this.bar,
      h("div", { class: "cw-dl-foot" }, [
        h("div", { class: "cw-dl-stats" }, [
          this.bytesEl,
          this.speedEl,
          this.etaEl,
          this.residencyEl,
        ]),
        h("div", { class: "cw-dl-actions" }, [
          this.cancelButton,
          this.retryButton,
          this.unloadButton,
          this.actionButton,
        ]),
      ]),
      this.fileEl,
      this.noteEl,
      this.errorEl,
      this.actionEl,
      this.tokenForm,
    ]);
    this.update(row);
  }

  update(row: DownloadRow): void {
    this.row = row;
    const pct = rowPercent(row);
    const active = row.state === "Downloading";
    this.el.dataset.state = stateClass(row.state);
    setText(this.stateEl, row.state);
    this.stateEl.className = `cw-state-pill cw-state-${stateClass(row.state)}`;
    setAttr(this.bar, "aria-valuenow", pct);
    setAttr(this.bar, "aria-valuetext", `${pct}% (${row.state})`);
    this.fill.style.width = `${pct}%`;
    const total = row.bytes_total > 0 ? ` / ${formatBytes(row.bytes_total)}` : "";
    // A remote model downloads nothing: its row shows the server instead of bytes.
    const size = `${formatBytes(row.bytes_done)}${total}`;
    setText(this.bytesEl, row.server !== null ? `Server ${row.server}` : size);
    setText(this.speedEl, active ? formatSpeed(row.speed_bps) : "");
    setText(this.etaEl, active ? formatEta(row.eta_s) : "");
    setText(this.fileEl, active && row.file ? row.file : "");
    this.fileEl.hidden = !(active && row.file);
    setText(this.errorEl, row.state === "Failed" ? (row.error ?? "The download failed.") : "");
    this.errorEl.hidden = row.state !== "Failed";
    const focused = activeElementOf(this.el);
    this.cancelButton.hidden = !row.can_cancel;
    this.retryButton.hidden = !row.can_retry;
    this.unloadButton.hidden = !(row.residency?.can_unload ?? false);
    const residency = residencyText(row);
    setText(this.residencyEl, residency);
    this.residencyEl.hidden = residency === "";
    const note = row.residency?.note ?? "";
    setText(this.noteEl, note);
    this.noteEl.hidden = note === "";
    // Where Retry cannot help, say what can (e.g. "Add a token"), with a button where the
    // widget can do it.
    const action = !row.can_retry && row.action ? `What to do: ${row.action}` : "";
    setText(this.actionEl, action);
    this.actionEl.hidden = action === "";
    const doable = action !== "" && (row.action === "Add a token" || row.action === "Free memory");
    this.actionButton.hidden = !doable;
    if (doable) {
      setText(this.actionButton, row.action ?? "");
      this.actionButton.title = `${row.action} for ${row.repo_id}`;
    }
    if (!doable || row.action !== "Add a token") this.tokenForm.hidden = true;
    // A keyboard user whose button went away (Cancel once canceled, Retry once queued)
    // stays on this row: on its other action, else on the download manager.
    const buttons = [this.retryButton, this.cancelButton, this.unloadButton, this.actionButton];
    if (buttons.some((b) => focused === b && b.hidden)) {
      const next = buttons.find((b) => !b.hidden);
      if (next) next.focus();
      else this.manager.el.focus();
    }
  }

  /** Send the token once and forget it: the field is cleared before the answer comes. */
  private async submitToken(): Promise<void> {
    const token = this.tokenInput.value.trim();
    this.tokenInput.value = "";
    if (!token) {
      this.showTokenError("Paste a Hugging Face token first (hf_…).");
      this.tokenInput.focus();
      return;
    }
    const reply = await this.manager.setToken(token);
    if (reply.ok) {
      this.showTokenError(null);
      this.tokenForm.hidden = true;
    } else {
      this.showTokenError(reply.error ?? "The token was not accepted.");
      this.tokenInput.focus();
    }
  }

  private showTokenError(message: string | null): void {
    setText(this.tokenError, message ?? "");
    this.tokenError.hidden = message === null;
    setAttr(this.tokenInput, "aria-invalid", message === null ? null : "true");
  }
}

export class DownloadsPanel {
  readonly el: HTMLElement;
  private readonly toggle: HTMLButtonElement;
  private readonly summary: HTMLElement;
  private readonly list: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly rows = new Map<string, DownloadRowView>();

  constructor(
    private readonly rpc: Rpc,
    private readonly dialogs: Dialogs,
    private readonly ui: UiState,
  ) {
    const listId = uid("dl-list");
    this.summary = h("span", { class: "cw-dl-summary" });
    this.toggle = h(
      "button",
      {
        type: "button",
        class: "cw-panel-toggle",
        "aria-controls": listId,
        "aria-expanded": "true",
      },
      [
        h("span", { class: "cw-chevron", "aria-hidden": "true" }),
        h("span", { class: "cw-panel-title" }, ["Downloads"]),
        this.summary,
      ],
    );
    this.toggle.addEventListener("click", () => {
      this.ui.downloadsCollapsed = !this.collapsed;
      this.drawCollapsed();
    });
    this.empty = h("p", { class: "cw-empty" }, [
      "No downloads. Pick a model that is not downloaded and it is fetched here.",
    ]);
    this.list = h("div", { class: "cw-dl-list", id: listId }, [this.empty]);
    this.el = h(
      "section",
      { class: "cw-panel cw-downloads", role: "region", "aria-label": "Downloads", tabindex: -1 },
      [h("h2", { class: "cw-panel-heading" }, [this.toggle]), this.list],
    );
  }

  /** Collapsed only when the user collapsed it (and no download was requested since). */
  get collapsed(): boolean {
    return this.ui.downloadsCollapsed ?? false;
  }

  update(downloads: DownloadRow[]): void {
    const seen = new Set<string>();
    for (const row of downloads) {
      seen.add(row.repo_id);
      const view = this.rows.get(row.repo_id);
      if (view) view.update(row);
      else this.rows.set(row.repo_id, new DownloadRowView(row, this));
    }
    for (const [repoId, view] of this.rows) {
      if (!seen.has(repoId)) {
        view.el.remove();
        this.rows.delete(repoId);
      }
    }
    // Put rows in the kernel's order, moving only nodes that are out of place.
    let anchor: Element | null = this.list.firstElementChild;
    for (const row of downloads) {
      const node = this.rows.get(row.repo_id)!.el;
      if (node === anchor) anchor = anchor.nextElementSibling;
      else this.list.insertBefore(node, anchor);
    }
    this.empty.hidden = downloads.length > 0;
    const active = downloads.filter((row) => row.can_cancel).length;
    const failed = downloads.filter((row) => row.state === "Failed").length;
    const parts = [active ? `${active} active` : "", failed ? `${failed} failed` : ""];
    setText(this.summary, parts.filter(Boolean).join(" · "));
    this.drawCollapsed();
  }

  /** Expand the manager and move focus to it (a download was just requested), unless the
   * user has moved on outside the widget meanwhile (typing in another notebook cell, say):
   * the request's answer comes a round trip later, and must not take their keystrokes. */
  openAndFocus(): void {
    this.ui.downloadsCollapsed = false;
    this.drawCollapsed();
    if (focusIsOursOrNowhere(this.el)) this.el.focus();
  }

  /** Ask for confirmation, then ask the kernel to cancel `repoId`. */
  async cancel(repoId: string, button: HTMLButtonElement): Promise<void> {
    if (isBusy(button)) return;
    const confirmed = await this.dialogs.confirm({
      title: "Cancel download?",
      message: `Stop downloading ${repoId}? Files already complete stay in the cache; you can retry later.`,
      confirmLabel: "Cancel download",
      cancelLabel: "Keep downloading",
      danger: true,
    });
    if (!confirmed) return;
    await whileBusy(button, () => this.rpc.request({ kind: "cancel_download", repo_id: repoId }));
  }

  async unload(repoId: string, button: HTMLButtonElement): Promise<void> {
    await whileBusy(button, () => this.rpc.request({ kind: "unload_model", repo_id: repoId }));
  }

  async freeMemory(repoId: string, button: HTMLButtonElement): Promise<void> {
    await whileBusy(button, () => this.rpc.request({ kind: "free_memory", repo_id: repoId }));
  }

  /** The token travels in this one request only (never logged: quiet). */
  async setToken(token: string): Promise<Reply> {
    return this.rpc.request({ kind: "set_token", token }, { quiet: true });
  }

  async retry(repoId: string, button: HTMLButtonElement): Promise<void> {
    await whileBusy(button, () => this.rpc.request({ kind: "retry_download", repo_id: repoId }));
  }

  private drawCollapsed(): void {
    const collapsed = this.collapsed;
    this.toggle.setAttribute("aria-expanded", String(!collapsed));
    this.list.hidden = collapsed;
    this.el.classList.toggle("cw-collapsed", collapsed);
  }
}

/** Whether focus is inside the widget holding `el` (shadow root or not), or on nothing. */
function focusIsOursOrNowhere(el: HTMLElement): boolean {
  const scope = el.getRootNode() as Document | ShadowRoot;
  const root = el.closest(".cw-root") ?? el;
  const inside = scope.activeElement;
  if (inside && inside !== el.ownerDocument.body) return root.contains(inside);
  const outside = el.ownerDocument.activeElement;
  const host = scope instanceof ShadowRoot ? scope.host : null;
  return !outside || outside === el.ownerDocument.body || outside === host;
}
