// The chat panel: message list with streamed replies, and the composer.
//
// Messages are keyed by id and updated in place: while a reply streams, only that
// message's body is re-rendered, once per delta. Older pages of a long conversation are
// drawn once (they do not change) and more are fetched with "Show earlier messages"; only
// the kernel's last page is compared on a change. The list stays pinned to the bottom when
// it was there.
//
// Messages with several versions (a regenerated reply, an edited message) show a "2 / 3"
// pager; user messages have an Edit button (Enter saves and regenerates, Escape cancels).
// The header exports the conversation as Markdown or JSON (a browser download) and imports
// one; a warning about the history file (saving stopped, a file moved aside) shows above
// the messages.

import { activeElementOf, h, setAttr, setText, uid } from "../dom";
import { formatRate } from "../format";
import { enableCodeCopy, setMarkdown } from "../markdown";
import {
  MAX_TEXT_BYTES,
  type ConversationRow,
  type ExportFile,
  type ExportFormat,
  type MessageRow,
  type StorageState,
} from "../protocol";
import type { Rpc } from "../rpc";
import type { Store } from "../store";
import type { TranscriptView } from "../transcript";
import type { UiState } from "../ui-state";

/** Distance from the bottom (px) within which the list counts as "at the bottom". */
const PIN_SLACK_PX = 32;
/** Older messages fetched per "Show earlier messages" (and once when a conversation opens). */
export const HISTORY_BATCH = 100;
const ROLE_LABELS: Record<MessageRow["role"], string> = {
  user: "You",
  assistant: "Assistant",
  system: "System",
};

/** What a message's controls ask the kernel for. */
export interface MessageActions {
  selectVersion(messageId: string, index: number): void;
  /** Save an edit; resolves true when the kernel took it (the editor closes then). */
  edit(messageId: string, text: string): Promise<boolean>;
}

/** The "◀ 2 / 3 ▶" control of a message with several versions. */
class Pager {
  readonly el: HTMLElement;
  private readonly prev: HTMLButtonElement;
  private readonly next: HTMLButtonElement;
  private readonly label: HTMLElement;
  private version = 0;
  private versions = 1;

  constructor(
    private readonly messageId: string,
    private readonly actions: MessageActions,
  ) {
    this.prev = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small cw-pager-prev",
        "aria-label": "Previous version",
      },
      ["◀"],
    );
    this.next = h(
      "button",
      { type: "button", class: "cw-btn cw-btn-small cw-pager-next", "aria-label": "Next version" },
      ["▶"],
    );
    this.label = h("span", { class: "cw-pager-label" });
    this.el = h(
      "div",
      { class: "cw-pager", role: "group", "aria-label": "Versions", hidden: true },
      [this.prev, this.label, this.next],
    );
    this.prev.addEventListener("click", () => this.go(this.version - 1));
    this.next.addEventListener("click", () => this.go(this.version + 1));
  }

  update(version: number, versions: number): void {
    this.version = version;
    this.versions = versions;
    this.el.hidden = versions <= 1;
    setText(this.label, `${version + 1} / ${versions}`);
    this.label.setAttribute("aria-label", `Version ${version + 1} of ${versions}`);
    this.prev.disabled = version <= 0;
    this.next.disabled = version >= versions - 1;
  }

  private go(index: number): void {
    if (index < 0 || index >= this.versions || index === this.version) return;
    this.actions.selectVersion(this.messageId, index);
  }
}

class MessageView {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private readonly meta: HTMLElement;
  private readonly errorEl: HTMLElement;
  /** Made when the message first has several versions (most never do: no DOM for them). */
  private pager: Pager | null = null;
  private tools: HTMLElement | null = null;
  private readonly editButton: HTMLButtonElement | null = null;
  private editor: HTMLTextAreaElement | null = null;
  private content: string | null = null;
  private status: MessageRow["status"] | null = null;

  constructor(
    private message: MessageRow,
    private readonly store: Store,
    private readonly actions: MessageActions | null = null,
  ) {
    this.body = h("div", {
      class: message.role === "assistant" ? "cw-msg-body cw-markdown" : "cw-msg-body cw-plain",
    });
    this.meta = h("div", { class: "cw-msg-meta" });
    this.errorEl = h("p", { class: "cw-msg-error", hidden: true });
    if (actions && message.role === "user") {
      this.editButton = h(
        "button",
        {
          type: "button",
          class: "cw-btn cw-btn-small cw-msg-edit",
          title: "Edit this message and reply again",
        },
        ["Edit"],
      );
      this.editButton.addEventListener("click", () => this.startEdit());
      this.tools = h("div", { class: "cw-msg-tools" }, [this.editButton]);
    }
    this.el = h("article", { class: `cw-msg cw-msg-${message.role}`, "data-id": message.id }, [
      h("div", { class: "cw-msg-role" }, [ROLE_LABELS[message.role] ?? message.role]),
      this.body,
      this.errorEl,
      this.meta,
      this.tools,
    ]);

    this.update(message);
  }

  private drawPager(version: number, versions: number): void {
    if (!this.pager && versions > 1 && this.actions) {
      this.pager = new Pager(this.message.id, this.actions);
      if (!this.tools) {
        this.tools = h("div", { class: "cw-msg-tools" });
        this.el.append(this.tools);
      }
      this.tools.prepend(this.pager.el);
    }
    this.pager?.update(version, versions);
  }

  /** Whether the message is being edited (its editor is open). */
  get editing(): boolean {
    return this.editor !== null;
  }

  /** Open the editor in place of the text (Enter saves, Escape cancels). */
  startEdit(): void {
    if (this.editor || !this.actions) return;
    const editor = h("textarea", {
      class: "cw-textbox cw-msg-editor",
      "aria-label": "Edit message",
      rows: 2,
    });
    editor.value = this.message.content;
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        this.stopEdit(true);
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        void this.saveEdit();
      }
    });
    this.editor = editor;
    this.body.hidden = true;
    this.body.after(editor);
    if (this.editButton) this.editButton.hidden = true;
    editor.focus();
  }

  private async saveEdit(): Promise<void> {
    const editor = this.editor;
    if (!editor || !this.actions) return;
    const text = editor.value;
    if (text.trim() === "") return;
    if (text === this.message.content) {
      this.stopEdit(true);
      return;
    }
    editor.disabled = true;
    const ok = await this.actions.edit(this.message.id, text);
    if (ok) this.stopEdit(false);
    else if (this.editor === editor) {
      editor.disabled = false; // keep the text: the user can try again or press Escape
      editor.focus();
    }
  }

  private stopEdit(refocus: boolean): void {
    this.editor?.remove();
    this.editor = null;
    this.body.hidden = false;
    if (this.editButton) {
      this.editButton.hidden = false;
      if (refocus) this.editButton.focus();
    }
  }

  /** Redraw what changed; returns true when a reply this view saw streaming has finished. */
  update(message: MessageRow): boolean {
    const finished = this.status === "streaming" && message.status !== "streaming";
    this.message = message;
    this.drawPager(message.version ?? 0, message.versions ?? 1);
    if (message.content !== this.content || message.status !== this.status) {
      this.status = message.status;
      this.drawBody(message.role, message.content);
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

  /** New streamed text of this (streaming) message. */
  streamed(role: MessageRow["role"], text: string): void {
    if (text !== this.content) this.drawBody(role, text);
  }

  private drawBody(role: MessageRow["role"], content: string): void {
    this.content = content;
    if (role === "assistant") setMarkdown(this.body, content);
    else setText(this.body, content);
    if (this.status === "streaming") {
      // Put the caret at the end of the last paragraph, not on a line of its own.
      const last = this.body.lastElementChild;
      const host = last?.tagName === "P" ? last : this.body;
      host.append(h("span", { class: "cw-caret", "aria-hidden": "true" }));
    }
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
      message.note ?? null,
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
    } else if (message.status === "interrupted") {
      items.push(
        h(
          "span",
          {
            class: "cw-badge cw-badge-stopped",
            title: "The kernel stopped while this reply was written: this is the text saved.",
          },
          ["Interrupted"],
        ),
      );
    } else if (message.status === "streaming" && message.note) {
      // e.g. "Loading model…": its (asleep) model loads again before the reply starts
      items.push(h("span", { class: "cw-badge cw-badge-live cw-badge-loading" }, [message.note]));
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
  private readonly header: HTMLElement;
  private readonly list: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly earlier: HTMLButtonElement;
  private readonly hint: HTMLElement;
  private readonly announcer: HTMLElement;
  private readonly storageEl: HTMLElement;
  private readonly importInput: HTMLInputElement;
  readonly exportMarkdownButton: HTMLButtonElement;
  readonly exportJsonButton: HTMLButtonElement;
  readonly importButton: HTMLButtonElement;
  private readonly actions: MessageActions;
  private readonly views = new Map<string, MessageView>();
  private readonly removeCopy: () => void;
  private conversationId: string | null = null;
  private resets = 0;
  private autosizedLength = 0;
  /** The message being sent, shown until the kernel's transcript holds it. */
  private pending: { el: HTMLElement; total: number } | null = null;
  private canSend = false;
  private loadingEarlier = false;

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
    this.earlier = h("button", { type: "button", class: "cw-btn cw-btn-small cw-earlier" }, [
      "Show earlier messages",
    ]);
    this.earlier.addEventListener("click", () => void this.loadEarlier());
    this.list = h("div", { class: "cw-messages", tabindex: 0, "aria-label": "Messages" }, [
      this.earlier,
      this.empty,
    ]);
    this.removeCopy = enableCodeCopy(this.list);
    this.announcer = h("div", { class: "cw-sr-only", "aria-live": "polite" });
    this.storageEl = h("div", { class: "cw-storage-warning", role: "status", hidden: true });
    this.actions = {
      selectVersion: (messageId, index) => {
        void this.rpc.request({ kind: "select_version", message_id: messageId, index });
      },
      edit: async (messageId, text) => {
        if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) return false;
        const reply = await this.rpc.request({ kind: "edit", message_id: messageId, text });
        return reply.ok;
      },
    };
    this.exportMarkdownButton = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small",
        "aria-label": "Export as Markdown",
        title: "Download this conversation as Markdown",
      },
      ["Markdown"],
    );
    this.exportJsonButton = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small",
        "aria-label": "Export as JSON",
        title: "Download this conversation as JSON (every version included)",
      },
      ["JSON"],
    );
    this.importButton = h(
      "button",
      {
        type: "button",
        class: "cw-btn cw-btn-small",
        "aria-label": "Import a conversation",
        title: "Open a Markdown or JSON export as a new conversation",
      },
      ["Import"],
    );
    this.importInput = h("input", {
      type: "file",
      accept: ".json,.md,.markdown,application/json,text/markdown",
      hidden: true,
      "aria-hidden": "true",
      tabindex: -1,
    });
    this.exportMarkdownButton.addEventListener("click", () => void this.exportAs("markdown"));
    this.exportJsonButton.addEventListener("click", () => void this.exportAs("json"));
    this.importButton.addEventListener("click", () => this.importInput.click());
    this.importInput.addEventListener("change", () => void this.importFile());

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

    this.header = h("header", { class: "cw-chat-header" }, [
      this.titleEl,
      this.modelChip,
      h("div", { class: "cw-chat-tools", role: "group", "aria-label": "Export and import" }, [
        this.exportMarkdownButton,
        this.exportJsonButton,
        this.importButton,
        this.importInput,
      ]),
    ]);
    this.el = h("section", { class: "cw-panel cw-chat", "aria-label": "Chat" }, [
      this.header,
      this.storageEl,
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

  /**
   * Redraw from the kernel's state: header and composer always, the messages when
   * `messages` (the transcript changed). Cheap when little changed: only the kernel's last
   * page is compared, and only changed messages are touched.
   */
  update(messages = true): void {
    const conv = this.store.activeConversation;
    const transcript = this.store.transcript;
    const switched =
      transcript.conversationId !== this.conversationId || transcript.resets !== this.resets;
    if (switched) this.enterConversation(conv, transcript);
    if (messages || switched) this.drawMessages(switched);
    this.drawHeader(conv);
    this.drawComposer(conv);
    this.drawStorage(this.store.storage);
  }

  /** Show why the history is not being saved (the chat goes on), and one-off notices. */
  private drawStorage(storage: StorageState | null): void {
    const lines: string[] = [];
    if (storage?.warning) lines.push(storage.warning.message);
    for (const notice of storage?.notices ?? []) lines.push(notice);
    setText(this.storageEl, lines.join(" "));
    this.storageEl.hidden = lines.length === 0;
  }

  /** Ask the kernel for the active conversation as a file and download it. */
  private async exportAs(format: ExportFormat): Promise<void> {
    const id = this.conversationId;
    if (!id) return;
    const reply = await this.rpc.request({ kind: "export", conversation_id: id, format });
    if (reply.ok && reply.file) downloadFile(reply.file);
  }

  private async importFile(): Promise<void> {
    const file = this.importInput.files?.[0];
    this.importInput.value = "";
    if (!file) return;
    if (file.size > MAX_TEXT_BYTES) {
      setText(
        this.hint,
        `${file.name} is over ${MAX_TEXT_BYTES / 1_000_000} MB: it cannot be imported here.`,
      );
      this.hint.classList.add("cw-hint-blocked");
      return;
    }
    await this.rpc.request({ kind: "import_conversation", text: await readText(file) });
  }

  /** Mount another view of the chat (Compare): its button in the header, its body under it;
   * while it is open the messages and the composer are hidden. */
  mountView(button: HTMLElement, body: HTMLElement): (open: boolean) => void {
    this.header.append(button);
    this.el.append(body);
    return (open) => this.el.classList.toggle("cw-chat-comparing", open);
  }

  /** Streamed text arrived for message `id`. */
  streamed(id: string): void {
    const view = this.views.get(id);
    const text = this.store.transcript.streamText(id);
    if (!view || text === null) return;
    const list = this.list;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight <= PIN_SLACK_PX;
    view.streamed("assistant", text);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  destroy(): void {
    this.removeCopy();
  }

  private enterConversation(conv: ConversationRow | null, transcript: TranscriptView): void {
    this.conversationId = transcript.conversationId;
    this.resets = transcript.resets;
    this.clearPending();
    for (const view of this.views.values()) view.el.remove();
    this.views.clear();
    this.textbox.value = conv ? (this.ui.drafts.get(conv.id) ?? "") : "";
    this.autosize();
  }

  private drawMessages(forceBottom: boolean): void {
    const transcript = this.store.transcript;
    if (this.pending && transcript.total > this.pending.total) this.clearPending();
    const messages = transcript.messages();
    // Rows before the kernel's window never change: draw them once, compare only the rest.
    const settled = transcript.windowStart - transcript.loadedFrom;
    const list = this.list;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight <= PIN_SLACK_PX;
    const seen = new Set<string>();
    let anchor: Element | null = this.empty.nextElementSibling;
    messages.forEach((message, i) => {
      seen.add(message.id);
      let view = this.views.get(message.id);
      if (view) {
        if (i >= settled && view.update(message) && message.role === "assistant") {
          this.announce(message);
        }
      } else {
        view = new MessageView(message, this.store, this.actions);
        this.views.set(message.id, view);
      }
      if (view.el === anchor) anchor = anchor.nextElementSibling;
      else list.insertBefore(view.el, anchor);
    });
    if (this.views.size > seen.size) {
      for (const [id, view] of this.views) {
        if (!seen.has(id)) {
          view.el.remove();
          this.views.delete(id);
        }
      }
    }
    this.empty.hidden = messages.length > 0 || this.pending !== null;
    this.drawEarlier();
    if (atBottom || forceBottom) list.scrollTop = list.scrollHeight;
    if (forceBottom && transcript.loadedFrom > 0) void this.loadEarlier();
  }

  private drawEarlier(): void {
    const more = this.store.transcript.loadedFrom;
    this.earlier.hidden = more <= 0;
    this.earlier.disabled = this.loadingEarlier;
    setText(
      this.earlier,
      this.loadingEarlier ? "Loading earlier messages…" : `Show earlier messages (${more} more)`,
    );
  }

  /** Fetch the page before the oldest message shown, keeping what is on screen in place. */
  private async loadEarlier(): Promise<void> {
    const transcript = this.store.transcript;
    if (this.loadingEarlier || transcript.loadedFrom <= 0) return;
    this.loadingEarlier = true;
    this.drawEarlier();
    const reply = await this.rpc.request({
      kind: "history",
      conversation_id: transcript.conversationId,
      before: transcript.loadedFrom,
      limit: HISTORY_BATCH,
    });
    this.loadingEarlier = false;
    const list = this.list;
    const fromBottom = list.scrollHeight - list.scrollTop;
    if (reply.ok && reply.page && transcript.prepend(reply.page)) {
      this.drawMessages(false);
      list.scrollTop = Math.max(0, list.scrollHeight - fromBottom);
    } else {
      this.drawEarlier(); // another conversation by now, or the kernel refused (reported)
    }
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
    const last = this.store.transcript.last;
    this.regenerateButton.hidden = !(
      !generating &&
      active !== null &&
      last !== undefined &&
      last.role === "assistant" &&
      last.status !== "streaming"
    );
    // A reply that failed (a server dropped mid-reply, say) keeps its text; Retry writes it again.
    setText(this.regenerateButton, last?.status === "error" ? "Retry" : "Regenerate");
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
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      setText(this.hint, `This message is over ${MAX_TEXT_BYTES / 1_000_000} MB: shorten it.`);
      this.hint.classList.add("cw-hint-blocked");
      return; // the text stays in the box
    }
    const conversationId = this.conversationId;
    this.textbox.value = "";
    if (conversationId !== null) this.ui.drafts.delete(conversationId);
    this.autosize();
    this.showPending(text);
    const reply = await this.rpc.request({ kind: "send", text });
    if (!reply.ok) this.clearPending();
    if (!reply.ok && this.textbox.value === "" && this.conversationId === conversationId) {
      // Lose nothing: give the text back so the user can send it again.
      this.textbox.value = text;
      if (conversationId !== null) this.ui.drafts.set(conversationId, text);
      this.autosize();
    }
  }

  /** Show the message being sent at once, until the kernel's transcript has it. */
  private showPending(text: string): void {
    this.clearPending();
    const row: MessageRow = {
      id: "pending",
      role: "user",
      content: text,
      status: "done",
      model: null,
      new_tokens: null,
      tokens_per_s: null,
      error: null,
      chunks: 0,
      version: 0,
      versions: 1,
    };
    const view = new MessageView(row, this.store);
    view.el.classList.add("cw-msg-pending");
    view.el.dataset.status = "sending";
    view.el.removeAttribute("data-id");
    this.pending = { el: view.el, total: this.store.transcript.total };
    this.list.append(view.el);
    this.empty.hidden = true;
    this.list.scrollTop = this.list.scrollHeight;
  }

  private clearPending(): void {
    this.pending?.el.remove();
    this.pending = null;
  }

  /**
   * Fit the box to its text (up to 200 px). Growing needs no layout of the page; only a
   * shorter text (a deletion, a sent message) resets the height to measure again, because
   * that makes the whole chat column lay out, which is slow beside a long conversation.
   */
  private autosize(): void {
    const box = this.textbox;
    const length = box.value.length;
    if (length < this.autosizedLength || length === 0) box.style.height = "auto";
    this.autosizedLength = length;
    const wanted = Math.min(box.scrollHeight, 200);
    if (wanted > 0 && wanted !== box.clientHeight) box.style.height = `${wanted}px`;
  }
}

/** Save a file the kernel sent (an export) through the browser's download. */
export function downloadFile(file: ExportFile): void {
  const url = URL.createObjectURL(new Blob([file.text], { type: file.mime }));
  const link = h("a", { href: url, download: file.filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** A chosen file's text (FileReader: works wherever `Blob.text` is missing). */
function readText(file: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result ?? ""));
    reader.onerror = () => reject(reader.error ?? new Error("the file could not be read"));
    reader.readAsText(file);
  });
}
