// Transient notices. Each toast is its own role="status" element that exists only while
// it is shown, so no empty status region lingers in the page.

import { h } from "../dom";

export const TOAST_MS = 4000;

export class Toasts {
  readonly el: HTMLElement = h("div", { class: "cw-toasts" });
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();

  /** Show `text` for `durationMs`; a click dismisses it early. */
  show(text: string, durationMs: number = TOAST_MS): HTMLElement {
    const toast = h("div", { class: "cw-toast", role: "status" }, [
      h("span", { class: "cw-toast-icon", "aria-hidden": "true" }, ["✓"]),
      h("span", { class: "cw-toast-text" }, [text]),
    ]);
    const remove = (): void => {
      toast.remove();
      clearTimeout(timer);
      this.timers.delete(timer);
    };
    const timer = setTimeout(remove, durationMs);
    this.timers.add(timer);
    toast.addEventListener("click", remove);
    this.el.append(toast);
    return toast;
  }

  destroy(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.el.replaceChildren();
  }
}
