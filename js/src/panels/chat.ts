// The chat panel: message list with streamed replies, and the composer.
//
// Messages are keyed by id and updated in place: while a reply streams, only that
// message's body is re-rendered. The list stays pinned to the bottom when it was there.

import { activeElementOf, h, setAttr, setText, uid } from "../dom";
import { formatRate } from "../format";
import { enableCodeCopy, setMarkdown } from "../markdown";
import type { ConversationRow, MessageRow } from "../protocol";
import type { Rpc } from "../rpc";
import type { Store } from "../store";
import type { UiState } from "../ui-state";

/** Distance from the bottom (px) within which the list counts as "at the bottom". */
const PIN_SLACK_PX = 32;
const ROLE_LABELS: Record<MessageRow["role"], string> = {
  user: "You",
  assistant: "Assistant",
  system: "System",
};

class MessageView {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private readonly meta: HTMLElement;
  private readonly errorEl: HTMLElement;
  private content: string | null = null;
  private status: MessageRow["status"] | null = null;

  constructor(
    message: MessageRow,
    private readonly store: Store,
  ) {
    this.body = h("div", {
      class: message.role === "assistant" ? "cw-msg-body cw-markdown" : "cw-msg-body cw-plain",
    });
    this.meta = h("div", { class: "cw-msg-meta" });
    this.errorEl = h("p", { class: "cw-msg-error", hidden: true });
    this.el = h("article", { class: `cw-msg cw-msg-${message.role}`, "data-id": message.id }, [
      h("div", { class: "cw-msg-role" }, [ROLE_LABELS[message.role] ?? message.role]),
      this.body,
      this.errorEl,
      this.meta,
    ]);
    this.update(message);
  }

  /** Redraw what changed; returns true when a reply this view saw streaming has finished. */
  update(message: MessageRow): boolean {
    const finished = this.status === "streaming" && message.status !== "streaming";
    if (message.content !== this.content || message.status !== this.status) {
      this.content = message.content;
      this.status = message.status;
      if (message.role === "assistant") setMarkdown(this.body, message.content);
      else setText(this.body, message.content);
      if (message.status === "streaming") {
        // Put the caret at the end of the last paragraph, not on a line of its own.
        const last = this.body.lastElementChild;
        const host = last?.tagName === "P" ? last : this.body;
        host.append(h("span", { class: "cw-caret", "aria-hidden": "true" }));
      }
    }
    this.el.dataset.status = message.status;
    setAttr(this.el, "aria-busy", message.status === "streaming" ? "true" : null);
    setText(
      this.errorEl,
      message.status === "error" ? (message.error ?? "Generation failed.") : "",
    );
    this.errorEl.hidden = message.status !== "error";
    this.drawMeta(message);
    return finished;
  }

  private drawMeta(message: MessageRow): void {
    if (message.role !== "assistant") {
      this.meta.hidden = true;
      return;
    }
    const key = JSON.stringify([
      message.model,
      message.new_tokens,
      message.tokens_per_s,
      message.status,
    ]);
    if (this.meta.dataset.key === key) return; // unchanged: leave the nodes alone
    this.meta.dataset.key = key;
    const items: HTMLElement[] = [];
    if (message.model) {
      items.push(
        h("span", { class: "cw-meta-model", title: message.model }, [
          this.store.displayName(message.model),
        ]),
      );
    }
    if (message.new_tokens !== null) {
      const n = message.new_tokens;
      items.push(h("span", { class: "cw-meta-tokens" }, [`${n} token${n === 1 ? "" : "s"}`]));
    }
    const rate = formatRate(message.tokens_per_s);
    if (rate) items.push(h("span", { class: "cw-meta-rate" }, [rate]));
    if (message.status === "stopped") {
      items.push(h("span", { class: "cw-badge cw-badge-stopped" }, ["Stopped"]));
    } else if (message.status === "error") {
      items.push(h("span", { class: "cw-badge cw-badge-error" }, ["Error"]));
    } else if (message.status === "streaming") {
      items.push(h("span", { class: "cw-badge cw-badge-live" }, ["Generating…"]));
    }
    this.meta.replaceChildren(...items);
    this.meta.hidden = items.length === 0;
  }
}

export class ChatPanel {
  readonly el: HTMLElement;
  readonly textbox: HTMLTextAreaElement;
  readonly sendButton: HTMLButtonElement;
  readonly stopButton: HTMLButtonElement;
  readonly regenerateButton: HTMLButtonElement;
  private readonly titleEl: HTMLElement;
  private readonly modelChip: HTMLElement;
  private readonly list: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly hint: HTMLElement;
  private readonly announcer: HTMLElement;
  private readonly views = new Map<string, MessageView>();
  private readonly removeCopy: () => void;
  private conversationId: string | null = null;
  private canSend = false;

  constructor(
    private readonly store: Store,
    private readonly rpc: Rpc,
    private readonly ui: UiState,
  ) {
    this.titleEl = h("h2", { class: "cw-chat-title" });
    this.modelChip = h("span", { class: "cw-model-chip" });
    this.empty = h("div", { class: "cw-empty cw-chat-empty" }, [
      h("p", { class: "cw-empty-title" }, ["Start a conversation"]),
      h("p", {}, ["Pick a model above, type a message below, and press Enter."]),
    ]);
    this.list = h("div", { class: "cw-messages", tabindex: 0, "aria-label": "Messages" }, [
      this.empty,
    ]);
    this.removeCopy = enableCodeCopy(this.list);
    this.announcer = h("div", { class: "cw-sr-only", "aria-live": "polite" });

    const hintId = uid("composer-hint");
    this.textbox = h("textarea", {
      class: "cw-textbox",
      rows: 1,
      "aria-label": "Message",
      "aria-describedby": hintId,
    });
    this.hint = h("p", { class: "cw-composer-hint", id: hintId });
    this.sendButton = h(
      "button",
      { type: "button", class: "cw-btn cw-btn-primary", "aria-describedby": hintId },
      ["Send"],
    );
    this.stopButton = h("button", { type: "button", class: "cw-btn cw-btn-danger", hidden: true }, [
      "Stop",
    ]);
    this.regenerateButton = h(
      "button",
      { type: "button", class: "cw-btn", hidden: true, title: "Write the last reply again" },
      ["Regenerate"],
    );

    this.textbox.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        void this.send();
      }
    });
    this.textbox.addEventListener("input", () => {
      if (this.conversationId !== null) {
        this.ui.drafts.set(this.conversationId, this.textbox.value);
      }
      this.autosize();
    });
    this.sendButton.addEventListener("click", () => void this.send());
    this.stopButton.addEventListener("click", () => {
      void this.rpc.request({ kind: "stop" });
    });
    this.regenerateButton.addEventListener("click", () => {
      void this.rpc.request({ kind: "regenerate" });
    });

    this.el = h("section", { class: "cw-panel cw-chat", "aria-label": "Chat" }, [
      h("header", { class: "cw-chat-header" }, [this.titleEl, this.modelChip]),
      this.list,
      this.announcer,
      h("div", { class: "cw-composer" }, [
        this.textbox,
        h("div", { class: "cw-composer-bar" }, [
          this.hint,
          h("div", { class: "cw-composer-actions" }, [
            this.regenerateButton,
            this.stopButton,
            this.sendButton,
          ]),
        ]),
      ]),
    ]);
  }

  /** Redraw from traits. Cheap when little changed: only changed messages are touched. */
  update(): void {
    const conv = this.store.activeConversation;
    const switched = (conv?.id ?? null) !== this.conversationId;
    if (switched) this.enterConversation(conv);
    this.drawMessages(conv?.messages ?? [], switched);
    this.drawHeader(conv);
    this.drawComposer(conv);
  }

  destroy(): void {
    this.removeCopy();
  }

  private enterConversation(conv: ConversationRow | null): void {
    this.conversationId = conv?.id ?? null;
    for (const view of this.views.values()) view.el.remove();
    this.views.clear();
    this.textbox.value = conv ? (this.ui.drafts.get(conv.id) ?? "") : "";
    this.autosize();
  }

  private drawMessages(messages: MessageRow[], forceBottom: boolean): void {
    const list = this.list;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight <= PIN_SLACK_PX;
    const seen = new Set<string>();
    let anchor: Element | null = this.empty.nextElementSibling;
    for (const message of messages) {
      seen.add(message.id);
      let view = this.views.get(message.id);
      if (view) {
        if (view.update(message) && message.role === "assistant") this.announce(message);
      } else {
        view = new MessageView(message, this.store);
        this.views.set(message.id, view);
      }
      if (view.el === anchor) anchor = anchor.nextElementSibling;
      else list.insertBefore(view.el, anchor);
    }
    for (const [id, view] of this.views) {
      if (!seen.has(id)) {
        view.el.remove();
        this.views.delete(id);
      }
    }
    this.empty.hidden = messages.length > 0;
    if (atBottom || forceBottom) list.scrollTop = list.scrollHeight;
  }

  /** Tell screen readers a reply is complete (the list itself is not a live region). */
  private announce(message: MessageRow): void {
    const who = message.model ? this.store.displayName(message.model) : "the model";
    const what = message.status === "done" ? "Reply" : `Reply (${message.status})`;
    const text =
      message.content.length > 500 ? `${message.content.slice(0, 500)}…` : message.content;
    setText(this.announcer, `${what} from ${who}: ${text}`);
  }

  private drawHeader(conv: ConversationRow | null): void {
    setText(this.titleEl, conv?.title || "Chat");
    const active = conv?.active_model ?? null;
    setText(this.modelChip, active ? this.store.displayName(active) : "No model");
    this.modelChip.title = active ?? "";
    this.modelChip.classList.toggle("cw-model-chip-none", active === null);
  }

  private drawComposer(conv: ConversationRow | null): void {
    const generating = this.store.generating;
    const active = conv?.active_model ?? null;
    const pending = this.store.pending();
    let reason: string | null = null;
    if (conv === null) reason = "Create a conversation to start chatting.";
    else if (active === null) {
      reason = pending
        ? `${pending.label}. Send is available once it is ready.`
        : "Choose a model in the Model list to start chatting.";
    } else if (generating) reason = "A reply is being generated: wait for it or press Stop.";

    this.canSend = reason === null;
    this.sendButton.disabled = !this.canSend;
    setText(this.hint, reason ?? "Enter to send · Shift+Enter for a new line");
    this.hint.classList.toggle("cw-hint-blocked", reason !== null);
    this.textbox.placeholder =
      active !== null
        ? `Message ${this.store.displayName(active)}…`
        : pending
          ? `${pending.label}…`
          : "Choose a model to start chatting…";

    const focused = activeElementOf(this.el);
    this.stopButton.hidden = !generating;
    const messages = conv?.messages ?? [];
    const last = messages[messages.length - 1];
    this.regenerateButton.hidden = !(
      !generating &&
      active !== null &&
      last !== undefined &&
      last.role === "assistant" &&
      last.status !== "streaming"
    );
    // A keyboard user whose button went away keeps a place to act from: Regenerate starts
    // a reply (on to Stop), Stop ends it (back to the message box).
    if (focused === this.regenerateButton && this.regenerateButton.hidden) {
      (this.stopButton.hidden ? this.textbox : this.stopButton).focus();
    } else if (focused === this.stopButton && this.stopButton.hidden) {
      this.textbox.focus();
    }
  }

  private async send(): Promise<void> {
    const text = this.textbox.value;
    if (!this.canSend || text.trim() === "") return;
    const conversationId = this.conversationId;
    this.textbox.value = "";
    if (conversationId !== null) this.ui.drafts.delete(conversationId);
    this.autosize();
    const reply = await this.rpc.request({ kind: "send", text });
    if (!reply.ok && this.textbox.value === "" && this.conversationId === conversationId) {
      // Lose nothing: give the text back so the user can send it again.
      this.textbox.value = text;
      if (conversationId !== null) this.ui.drafts.set(conversationId, text);
      this.autosize();
    }
  }

  private autosize(): void {
    this.textbox.style.height = "auto";
    if (this.textbox.scrollHeight > 0) {
      this.textbox.style.height = `${Math.min(this.textbox.scrollHeight, 200)}px`;
    }
  }
}
