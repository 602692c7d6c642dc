// The chosen model's details under the selector: where it sits while loaded, and a
// "Precision" <select> whose options say, before anything is downloaded, whether each
// precision fits on GPU / partial offload / CPU only / won't fit, with the bytes it needs.
// Options this machine cannot offer (8-bit and 4-bit without bitsandbytes and CUDA) are
// listed disabled, and a note says why. The choice is the kernel's (remembered per model).

import { h, setText, uid } from "../dom";
import { formatBytes } from "../format";
import type { FitInfo, FitOption, ModelRow } from "../protocol";
import type { Rpc } from "../rpc";
import { residencyText } from "./downloads";

/** Precision options in the order shown, with the words for each. */
export const PRECISIONS: readonly { option: string; label: string }[] = [
  { option: "auto", label: "auto (checkpoint)" },
  { option: "bfloat16", label: "bfloat16" },
  { option: "float16", label: "float16" },
  { option: "float32", label: "float32" },
  { option: "8bit", label: "8-bit" },
  { option: "4bit", label: "4-bit" },
];

/** "Fits on GPU · needs 1.2 GB" for one option's verdict. */
export function fitText(fit: FitOption): string {
  return `${fit.label} · needs ${formatBytes(fit.required_bytes)}`;
}

/** The words of one option in the Precision select. */
export function precisionOptionText(option: string, info: FitInfo | null): string {
  const name = PRECISIONS.find((p) => p.option === option)?.label ?? option;
  if (info === null || info.status !== "ready") return name;
  const fit = info.options.find((o) => o.option === option);
  if (fit) return `${name} — ${fitText(fit)}`;
  const absent = info.absent.find((a) => a.option === option);
  return absent ? `${name} — unavailable` : name;
}

export class PrecisionPanel {
  readonly el: HTMLElement;
  readonly select: HTMLSelectElement;
  private readonly residencyEl: HTMLElement;
  private readonly summaryEl: HTMLElement;
  private readonly noteEl: HTMLElement;
  private repoId: string | null = null;
  private choosing = false;

  constructor(private readonly rpc: Rpc) {
    const selectId = uid("precision");
    const summaryId = uid("fit-summary");
    this.select = h("select", {
      id: selectId,
      class: "cw-select cw-precision",
      "aria-label": "Precision",
      "aria-describedby": summaryId,
    });
    this.select.addEventListener("change", () => void this.choose(this.select.value));
    this.residencyEl = h("p", { class: "cw-residency", hidden: true });
    this.summaryEl = h("p", { class: "cw-fit-summary", id: summaryId, "aria-live": "polite" });
    this.noteEl = h("p", { class: "cw-fit-note", hidden: true });
    this.el = h("div", { class: "cw-model-details", hidden: true }, [
      this.residencyEl,
      h("div", { class: "cw-row cw-precision-row" }, [
        h("label", { class: "cw-label", for: selectId }, ["Precision"]),
        this.select,
      ]),
      this.summaryEl,
      this.noteEl,
    ]);
  }

  /** Show `row` (the conversation's target model), or nothing. */
  update(row: ModelRow | undefined): void {
    if (!row || row.repo_id.includes(":")) {
      // no row yet, or a remote model: no precision to pick, no fit to judge
      this.el.hidden = true;
      this.repoId = null;
      return;
    }
    this.el.hidden = false;
    this.repoId = row.repo_id;
    const info = row.fit ?? null;
    const residency = residencyText(row);
    setText(this.residencyEl, residency);
    this.residencyEl.hidden = residency === "";

    const existing = new Map(Array.from(this.select.options).map((o) => [o.value, o]));
    const wanted = PRECISIONS.map((p) => p.option).filter(
      (option) =>
        info === null ||
        info.status !== "ready" ||
        info.options.some((o) => o.option === option) ||
        info.absent.some((a) => a.option === option) ||
        option === row.precision,
    );
    let anchor: Element | null = this.select.firstElementChild;
    for (const option of wanted) {
      let el = existing.get(option);
      existing.delete(option);
      if (!el) el = h("option", { value: option });
      setText(el, precisionOptionText(option, info));
      const absent = info?.absent.find((a) => a.option === option);
      el.disabled = absent !== undefined && option !== row.precision;
      el.title = absent ? absent.reason : "";
      if (el === anchor) anchor = anchor.nextElementSibling;
      else this.select.insertBefore(el, anchor);
    }
    for (const stale of existing.values()) stale.remove();
    if (!this.choosing) this.select.value = row.precision;

    const chosen = info?.options.find((o) => o.option === row.precision);
    let summary: string;
    if (info === null) summary = "Fit not estimated yet.";
    else if (info.status === "pending") summary = "Estimating whether it fits…";
    else if (info.status === "unavailable") summary = info.note ?? "No fit estimate.";
    else if (chosen) {
      const budget =
        chosen.budget_bytes !== null ? ` (memory budget ${formatBytes(chosen.budget_bytes)})` : "";
      summary = `${fitText(chosen)}${budget}`;
    } else summary = `${row.precision}: not available for this model.`;
    setText(this.summaryEl, summary);
    this.el.dataset.verdict = chosen?.verdict ?? "";

    // One line per reason: "Not offered — 8-bit, 4-bit: need bitsandbytes and a CUDA GPU".
    const byReason = new Map<string, string[]>();
    for (const a of info?.absent ?? []) {
      const label = PRECISIONS.find((p) => p.option === a.option)?.label ?? a.option;
      byReason.set(a.reason, [...(byReason.get(a.reason) ?? []), label]);
    }
    const notes = [...byReason].map(([reason, labels]) => `${labels.join(", ")}: ${reason}`);
    setText(this.noteEl, notes.length ? `Not offered — ${notes.join("; ")}` : "");
    this.noteEl.hidden = notes.length === 0;
  }

  private async choose(option: string): Promise<void> {
    const repoId = this.repoId;
    if (repoId === null || !option) return;
    this.choosing = true;
    await this.rpc.request({ kind: "set_precision", repo_id: repoId, option });
    this.choosing = false;
  }
}
