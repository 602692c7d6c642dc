// The conversation list: new, switch, rename (inline) and delete (confirmed).
// Redrawn only when ids, titles, models or the active one change, never per token.

import { activeElementOf, h } from "../dom";
import type { Rpc } from "../rpc";
import type { Store } from "../store";
import type { Dialogs } from "./dialog";

export class ConversationsPanel {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private signature = "";
  private renaming: string | null = null;

  constructor(
    private readonly store: Store,
    private readonly rpc: Rpc,
    private readonly dialogs: Dialogs,
  ) {
    const newButton = h(
      "button",
      { type: "button", class: "cw-btn cw-btn-small", "aria-label": "New conversation" },
      ["+ New"],
    );
    newButton.addEventListener("click", () => {
      void this.rpc.request({ kind: "new_conversation" });
    });
    this.list = h("ul", { class: "cw-conv-list", "aria-label": "Conversations" });
    this.el = h("div", { class: "cw-conversations" }, [
      h("div", { class: "cw-section-head" }, [
        h("h2", { class: "cw-section-title" }, ["Chats"]),
        newButton,
      ]),
      this.list,
    ]);
  }

  update(): void {
    if (this.renaming !== null) return; // redrawn when the rename ends
    const activeId = this.store.activeConversation?.id ?? "";
    const rows = this.store.conversations.map((c) => [
      c.id,
      c.title,
      c.active_model,
      c.requested_model,
    ]);
    const signature = JSON.stringify([activeId, rows, this.store.models.map((m) => m.name)]);
    if (signature === this.signature) return;
    this.signature = signature;

    const focusKey = (activeElementOf(this.list) as HTMLElement | null)?.dataset?.focusKey;
    this.list.replaceChildren(
      ...this.store.conversations.map((conv) => {
        const title = conv.title || "Untitled";
        const isActive = conv.id === activeId;
        const model = conv.active_model ?? conv.requested_model;
        const subtitle = model
          ? `${this.store.displayName(model)}${conv.active_model === null ? " (waiting)" : ""}`
          : "No model";
        const open = h(
          "button",
          {
            type: "button",
            class: "cw-conv-open",
            "aria-current": isActive ? "true" : null,
            "data-focus-key": `open:${conv.id}`,
          },
          [
            h("span", { class: "cw-conv-title" }, [title]),
            h("span", { class: "cw-conv-sub" }, [subtitle]),
          ],
        );
        open.addEventListener("click", () => {
          if (!isActive) {
            void this.rpc.request({ kind: "switch_conversation", conversation_id: conv.id });
          }
        });
        const rename = h(
          "button",
          {
            type: "button",
            class: "cw-icon-btn",
            "aria-label": `Rename ${title}`,
            title: "Rename",
            "data-focus-key": `rename:${conv.id}`,
          },
          ["✎"],
        );
        rename.addEventListener("click", () => this.startRename(item, conv.id, title));
        const remove = h(
          "button",
          {
            type: "button",
            class: "cw-icon-btn cw-icon-danger",
            "aria-label": `Delete ${title}`,
            title: "Delete",
            "data-focus-key": `delete:${conv.id}`,
          },
          ["✕"],
        );
        remove.addEventListener("click", () => void this.confirmDelete(conv.id, title));
        const item = h("li", { class: isActive ? "cw-conv cw-conv-active" : "cw-conv" }, [
          open,
          h("span", { class: "cw-conv-actions" }, [rename, remove]),
        ]);
        return item;
      }),
    );
    if (focusKey) this.focusByKey(focusKey);
  }

  private startRename(item: HTMLElement, id: string, title: string): void {
    this.renaming = id;
    const input = h("input", {
      type: "text",
      class: "cw-input cw-conv-rename",
      "aria-label": "Conversation title",
      value: title,
      maxlength: 200,
    });
    let done = false;
    const finish = (commit: boolean): void => {
      if (done) return;
      done = true;
      const value = input.value.trim();
      if (commit && value && value !== title) {
        void this.rpc.request({ kind: "rename_conversation", conversation_id: id, title: value });
      }
      // The list shows the kernel's titles; the new one arrives with the next update.
      this.renaming = null;
      this.signature = "";
      this.update();
      this.focusByKey(`open:${id}`);
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    item.replaceChildren(input);
    input.focus();
    input.select();
  }

  private focusByKey(key: string): void {
    for (const node of this.list.querySelectorAll<HTMLElement>("[data-focus-key]")) {
      if (node.dataset.focusKey === key) {
        node.focus();
        return;
      }
    }
  }

  private async confirmDelete(id: string, title: string): Promise<void> {
    const confirmed = await this.dialogs.confirm({
      title: "Delete conversation?",
      message: `“${title}” and all its messages will be deleted. This cannot be undone.`,
      confirmLabel: "Delete",
      cancelLabel: "Keep",
      danger: true,
    });
    if (confirmed) await this.rpc.request({ kind: "delete_conversation", conversation_id: id });
  }
}
