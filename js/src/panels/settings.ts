// Generation settings (system prompt, max new tokens, temperature, top_p, sampling).
// Each committed change is validated here and sent as a partial `set_settings`; the
// fields then show what the kernel stored. A field being edited is never overwritten.

import { activeElementOf, h, setAttr, setText, uid } from "../dom";
import { SETTINGS_BOUNDS, type SettingsDict } from "../protocol";
import type { Rpc } from "../rpc";
import type { Store } from "../store";
import type { UiState } from "../ui-state";

type NumericKey = "max_new_tokens" | "temperature" | "top_p";

interface NumericField {
  key: NumericKey;
  label: string;
  min: number;
  max: number;
  step: number;
  integer: boolean;
}

const LABELS: Record<NumericKey, string> = {
  max_new_tokens: "Max new tokens",
  temperature: "Temperature",
  top_p: "Top p",
};

/** The numeric fields, with the kernel's bounds (from protocol.ts, generated from Python). */
const NUMERIC_FIELDS: NumericField[] = (Object.keys(LABELS) as NumericKey[]).map((key) => ({
  key,
  label: LABELS[key],
  ...SETTINGS_BOUNDS[key],
}));

/** null when `raw` is a valid value for `field`, else what to type instead. */
export function numericProblem(field: NumericField, raw: string): string | null {
  const value = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(value)) return `${field.label}: enter a number.`;
  if (field.integer && !Number.isInteger(value)) return `${field.label}: enter a whole number.`;
  if (value < field.min || value > field.max) {
    return `${field.label}: enter a value from ${field.min} to ${field.max}.`;
  }
  return null;
}

export class SettingsPanel {
  readonly el: HTMLDetailsElement;
  private readonly systemPrompt: HTMLTextAreaElement;
  private readonly sampling: HTMLInputElement;
  private readonly numbers = new Map<NumericKey, HTMLInputElement>();
  private readonly errorEl: HTMLElement;

  constructor(
    private readonly store: Store,
    private readonly rpc: Rpc,
    private readonly ui: UiState,
  ) {
    const errorId = uid("settings-error");
    this.errorEl = h("p", { class: "cw-field-error", id: errorId, hidden: true });
    const promptId = uid("system-prompt");
    this.systemPrompt = h("textarea", {
      id: promptId,
      class: "cw-input cw-system-prompt",
      rows: 3,
      placeholder: "You are a helpful assistant.",
    });
    this.systemPrompt.addEventListener("change", () => {
      void this.commit({ system_prompt: this.systemPrompt.value });
    });
    const samplingId = uid("sampling");
    this.sampling = h("input", { type: "checkbox", id: samplingId });
    this.sampling.addEventListener("change", () => {
      void this.commit({ do_sample: this.sampling.checked });
    });

    const numberRows = NUMERIC_FIELDS.map((field) => {
      const id = uid(field.key);
      const input = h("input", {
        type: "number",
        id,
        class: "cw-input cw-number",
        min: field.min,
        max: field.max,
        step: field.step,
        inputmode: field.integer ? "numeric" : "decimal",
        "aria-describedby": errorId,
      });
      input.addEventListener("change", () => {
        const problem = numericProblem(field, input.value);
        if (problem) {
          this.showError(problem, input);
          return;
        }
        void this.commit({ [field.key]: Number(input.value) } as Partial<SettingsDict>);
      });
      this.numbers.set(field.key, input);
      return h("div", { class: "cw-field cw-field-inline" }, [
        h("label", { for: id }, [field.label]),
        input,
      ]);
    });

    const body = h("div", { class: "cw-settings-body" }, [
      h("div", { class: "cw-field" }, [
        h("label", { for: promptId }, ["System prompt"]),
        this.systemPrompt,
      ]),
      ...numberRows,
      h("div", { class: "cw-field cw-field-inline cw-field-check" }, [
        h("label", { for: samplingId }, ["Sampling"]),
        this.sampling,
      ]),
      this.errorEl,
    ]);
    this.el = h("details", { class: "cw-settings" }, [
      h("summary", { class: "cw-section-title" }, ["Settings"]),
      body,
    ]);
    this.el.open = this.ui.settingsOpen;
    this.el.addEventListener("toggle", () => {
      this.ui.settingsOpen = this.el.open;
    });
  }

  /** Show the kernel's settings in every field that is not being edited. */
  update(force = false): void {
    const settings = this.store.settings;
    const focused = force ? null : activeElementOf(this.el);
    if (focused !== this.systemPrompt) this.systemPrompt.value = settings.system_prompt;
    for (const [key, input] of this.numbers) {
      if (focused !== input) {
        input.value = String(settings[key]);
        setAttr(input, "aria-invalid", null);
      }
    }
    this.sampling.checked = settings.do_sample;
    this.el.classList.toggle("cw-greedy", !settings.do_sample);
    // Temperature and top p only matter when sampling: disabled (not merely dimmed, which
    // failed axe-core's contrast rule) while decoding is greedy.
    for (const key of ["temperature", "top_p"] as const) {
      const input = this.numbers.get(key);
      if (input) {
        input.disabled = !settings.do_sample;
        input.title = settings.do_sample ? "" : "Used only when Sampling is on";
      }
    }
  }

  private async commit(change: Partial<SettingsDict>): Promise<void> {
    this.showError(null);
    const reply = await this.rpc.request(
      { kind: "set_settings", settings: change },
      { quiet: true },
    );
    if (!reply.ok) {
      this.update(true); // back to what the kernel holds
      this.showError(reply.error ?? "The kernel refused these settings.");
    }
  }

  private showError(message: string | null, input?: HTMLInputElement): void {
    setText(this.errorEl, message ?? "");
    this.errorEl.hidden = message === null;
    for (const field of this.numbers.values()) setAttr(field, "aria-invalid", null);
    if (input && message !== null) setAttr(input, "aria-invalid", "true");
  }
}
