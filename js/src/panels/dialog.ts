// A confirmation dialog (role="alertdialog"): focus moves to the safe choice, Tab stays
// inside, Escape keeps things as they are, and focus returns where it was.

import { activeElementOf, h, uid } from "../dom";

export interface ConfirmOptions {
  title: string;
  message: string;
  confirmLabel: string;
  cancelLabel: string;
  /** Styles the confirm button as destructive. */
  danger?: boolean;
}

export class Dialogs {
  private current: { close: (answer: boolean) => void } | null = null;

  /** @param host the element dialogs are drawn over (the widget root). */
  constructor(private readonly host: HTMLElement) {}

  get isOpen(): boolean {
    return this.current !== null;
  }

  /** Ask a yes/no question; resolves true only when the user confirms. */
  confirm(options: ConfirmOptions): Promise<boolean> {
    this.current?.close(false);
    const titleId = uid("dialog-title");
    const messageId = uid("dialog-message");
    const confirmButton = h(
      "button",
      { type: "button", class: options.danger ? "cw-btn cw-btn-danger" : "cw-btn cw-btn-primary" },
      [options.confirmLabel],
    );
    const cancelButton = h("button", { type: "button", class: "cw-btn" }, [options.cancelLabel]);
    const dialog = h(
      "div",
      {
        class: "cw-dialog",
        role: "alertdialog",
        "aria-modal": "true",
        "aria-labelledby": titleId,
        "aria-describedby": messageId,
      },
      [
        h("h3", { class: "cw-dialog-title", id: titleId }, [options.title]),
        h("p", { class: "cw-dialog-message", id: messageId }, [options.message]),
        h("div", { class: "cw-dialog-actions" }, [cancelButton, confirmButton]),
      ],
    );
    const backdrop = h("div", { class: "cw-dialog-backdrop" }, [dialog]);
    const previousFocus = activeElementOf(this.host);

    return new Promise<boolean>((resolve) => {
      const close = (answer: boolean): void => {
        if (this.current !== handle) return;
        this.current = null;
        backdrop.remove();
        this.restoreFocus(previousFocus);
        resolve(answer);
      };
      const handle = { close };
      this.current = handle;
      confirmButton.addEventListener("click", () => close(true));
      cancelButton.addEventListener("click", () => close(false));
      backdrop.addEventListener("mousedown", (event) => {
        if (event.target === backdrop) event.preventDefault();
      });
      dialog.addEventListener("keydown", (event) => {
        if (event.key === "Escape") {
          event.preventDefault();
          event.stopPropagation();
          close(false);
        } else if (event.key === "Tab") {
          const order = [cancelButton, confirmButton];
          const at = order.indexOf(activeElementOf(dialog) as HTMLButtonElement);
          const next = event.shiftKey ? (at <= 0 ? order.length - 1 : at - 1) : (at + 1) % 2;
          event.preventDefault();
          order[next].focus();
        }
      });
      this.host.append(backdrop);
      cancelButton.focus();
    });
  }

  /** Close any open dialog as "keep" (used when the view goes away). */
  destroy(): void {
    this.current?.close(false);
  }

  private restoreFocus(previous: Element | null): void {
    if (previous instanceof HTMLElement && previous.isConnected) {
      previous.focus();
      return;
    }
    // The control that opened the dialog is gone (its row changed): focus the widget.
    this.host.focus();
  }
}
