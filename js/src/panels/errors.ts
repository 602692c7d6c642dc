// The error area: kernel errors (trait `errors`) and failed replies to this view's
// requests, each dismissible. Hidden (and out of the accessibility tree) when empty.

import { h } from "../dom";
import type { ErrorNotice } from "../protocol";
import type { UiState } from "../ui-state";

/** How many errors stay listed at once; older ones are dropped from view. */
export const MAX_SHOWN_ERRORS = 5;

interface ShownError {
  key: string;
  message: string;
  dismiss: () => void;
}

export class ErrorArea {
  readonly el: HTMLElement = h("div", { class: "cw-errors", role: "alert", hidden: true });
  private kernelErrors: ErrorNotice[] = [];
  private readonly localErrors: Array<{ id: number; message: string }> = [];
  private nextLocalId = 0;

  /**
   * @param ui where dismissed kernel errors are remembered.
   * @param onEmptied called when the user dismissed the last error (to move focus on).
   */
  constructor(
    private readonly ui: UiState,
    private readonly onEmptied: () => void = () => undefined,
  ) {}

  /** Show the kernel's `errors` trait. */
  setKernelErrors(errors: ErrorNotice[]): void {
    this.kernelErrors = errors;
    this.draw();
  }

  /** Show an error that happened in this view (e.g. a refused request). */
  report(message: string): void {
    this.nextLocalId += 1;
    this.localErrors.push({ id: this.nextLocalId, message });
    this.draw();
  }

  private draw(): void {
    const shown: ShownError[] = [
      ...this.kernelErrors
        .filter((e) => !this.ui.dismissedErrors.has(e.seq))
        .map((e) => ({
          key: `k${e.seq}`,
          message: e.message,
          dismiss: () => this.ui.dismissedErrors.add(e.seq),
        })),
      ...this.localErrors.map((e) => ({
        key: `l${e.id}`,
        message: e.message,
        dismiss: () => {
          const at = this.localErrors.findIndex((x) => x.id === e.id);
          if (at >= 0) this.localErrors.splice(at, 1);
        },
      })),
    ].slice(-MAX_SHOWN_ERRORS);

    this.el.replaceChildren(
      ...shown.map((error) => {
        const dismiss = h(
          "button",
          { type: "button", class: "cw-icon-btn cw-error-dismiss", "aria-label": "Dismiss error" },
          ["✕"],
        );
        dismiss.addEventListener("click", () => {
          error.dismiss();
          this.draw();
          // Keep keyboard users in place: on to the next error's button, else the widget.
          const next = this.el.querySelector<HTMLButtonElement>(".cw-error-dismiss");
          if (next) next.focus();
          else this.onEmptied();
        });
        return h("div", { class: "cw-error", "data-key": error.key }, [
          h("span", { class: "cw-error-icon", "aria-hidden": "true" }, ["!"]),
          h("span", { class: "cw-error-text" }, [error.message]),
          dismiss,
        ]);
      }),
    );
    this.el.hidden = shown.length === 0;
  }
}
