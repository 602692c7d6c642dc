// One rendered view of the widget: builds the layout, wires the kernel's state to panels,
// and removes every listener, timer and node it added when destroyed.

import { h } from "./dom";
import { isolateKeys } from "./keyboard";
import { ChatPanel } from "./panels/chat";
import { ComparePanel, type CompareModel } from "./panels/compare";
import { ConversationsPanel } from "./panels/conversations";
import { Dialogs } from "./panels/dialog";
import { DownloadsPanel } from "./panels/downloads";
import { ErrorArea } from "./panels/errors";
import { SelectorPanel } from "./panels/selector";
import { ServersPanel } from "./panels/servers";
import { SettingsPanel } from "./panels/settings";
import { Toasts } from "./panels/toast";
import type { SwitchNotice } from "./protocol";
import { Rpc } from "./rpc";
import { Listeners, Store, type WidgetModel } from "./store";
import { SyncState, type StateKey } from "./sync";
import { uiStateFor } from "./ui-state";

type Panel =
  "chat" | "messages" | "selector" | "conversations" | "downloads" | "settings" | "servers";

/** The panels a change of each piece of state redraws. */
const REDRAWS: Partial<Record<StateKey, Panel[]>> = {
  models: ["selector", "chat", "conversations"],
  conversations: ["chat", "selector", "conversations"],
  active_conversation: ["chat", "selector", "conversations"],
  transcript: ["messages", "chat"],
  downloads: ["downloads", "selector", "chat"],
  settings: ["settings"],
  generating: ["chat"],
  storage: ["chat"],
  servers: ["servers"],
};

export class WidgetView {
  readonly root: HTMLElement;
  readonly sync: SyncState;
  private readonly listeners: Listeners;
  private readonly rpc: Rpc;
  private readonly store: Store;
  private readonly toasts = new Toasts();
  private readonly dialogs: Dialogs;
  private readonly errors: ErrorArea;
  private readonly chat: ChatPanel;
  private readonly compare: ComparePanel;
  private readonly conversations: ConversationsPanel;
  private readonly selector: SelectorPanel;
  private readonly settings: SettingsPanel;
  private readonly servers: ServersPanel;
  private readonly downloads: DownloadsPanel;
  private readonly releaseKeys: () => void;
  private lastSwitchSeq: number;
  private focusSeq: number;

  constructor(model: WidgetModel, el: HTMLElement) {
    const ui = uiStateFor(model);
    this.listeners = new Listeners(model);
    this.root = h("div", { class: "cw-root", tabindex: -1 });
    this.releaseKeys = isolateKeys(this.root);
    this.errors = new ErrorArea(ui, () => this.chat.textbox.focus());
    this.rpc = new Rpc(model, (message) => this.errors.report(message));
    this.sync = new SyncState(model, this.rpc);
    this.store = new Store(this.sync);
    this.dialogs = new Dialogs(this.root);
    this.chat = new ChatPanel(this.store, this.rpc, ui);
    this.conversations = new ConversationsPanel(this.store, this.rpc, this.dialogs);
    this.selector = new SelectorPanel(this.store, this.rpc);
    this.settings = new SettingsPanel(this.store, this.rpc, ui);
    this.servers = new ServersPanel(this.store, this.rpc);
    this.downloads = new DownloadsPanel(this.rpc, this.dialogs, ui);
    let showCompare: (open: boolean) => void = () => {};
    this.compare = new ComparePanel(
      model as unknown as CompareModel, // its trait, compare_state, is outside WidgetState
      {
        models: () => this.store.models,
        displayName: (repoId) => this.store.displayName(repoId),
        request: (intent, options) => this.rpc.request(intent, options),
      },
      (open) => showCompare(open),
    );
    showCompare = this.chat.mountView(this.compare.toggle, this.compare.el);

    this.root.append(
      // A div, not a <header>: inside a notebook a header is a banner landmark nested in the
      // page's own landmarks (axe-core: landmark-banner-is-top-level).
      h("div", { class: "cw-topbar" }, [
        h("span", { class: "cw-brand", "aria-hidden": "true" }, ["◆"]),
        this.selector.el,
      ]),
      this.servers.noticeEl,
      this.errors.el,
      h("div", { class: "cw-body" }, [
        h("aside", { class: "cw-panel cw-sidebar", "aria-label": "Conversations and settings" }, [
          this.conversations.el,
          this.settings.el,
          this.servers.el,
        ]),
        this.chat.el,
        this.downloads.el,
      ]),
      this.toasts.el,
    );

    // Only changes that happen while this view is alive announce themselves.
    this.lastSwitchSeq = this.sync.get("last_switch")?.seq ?? 0;
    this.focusSeq = this.sync.get("download_focus_seq") ?? 0;

    this.sync.onChange((keys) => this.redraw(keys));
    this.sync.onStream((id) => this.guard("streamed text", () => this.chat.streamed(id)));

    this.guard("initial render", () => {
      this.downloads.update(this.store.downloads);
      this.selector.update();
      this.conversations.update();
      this.settings.update();
      this.servers.update();
      this.chat.update(true);
      this.errors.setKernelErrors(this.sync.get("errors") ?? []);
    });
    el.append(this.root);
    // A view that (re)connects asks for the whole state: what streamed before it existed,
    // and anything a host did not deliver.
    this.sync.requestResync();
  }

  destroy(): void {
    this.sync.dispose();
    this.listeners.dispose();
    this.releaseKeys();
    this.rpc.dispose();
    this.dialogs.destroy();
    this.toasts.destroy();
    this.selector.destroy();
    this.servers.destroy();
    this.chat.destroy();
    this.compare.destroy();
    this.root.remove();
  }

  private redraw(keys: ReadonlySet<StateKey>): void {
    const panels = new Set<Panel>();
    for (const key of keys) for (const panel of REDRAWS[key] ?? []) panels.add(panel);
    const what = [...keys].join(", ");
    if (panels.has("downloads")) {
      this.guard(what, () => this.downloads.update(this.store.downloads));
    }
    if (panels.has("settings")) this.guard(what, () => this.settings.update());
    if (panels.has("servers")) this.guard(what, () => this.servers.update());
    if (panels.has("selector")) this.guard(what, () => this.selector.update());
    if (panels.has("conversations")) this.guard(what, () => this.conversations.update());
    if (panels.has("chat") || panels.has("messages")) {
      this.guard(what, () => this.chat.update(panels.has("messages")));
    }
    if (keys.has("models")) this.guard(what, () => this.compare.updateModels());
    if (keys.has("errors")) {
      this.guard(what, () => this.errors.setKernelErrors(this.sync.get("errors") ?? []));
    }
    if (keys.has("last_switch"))
      this.guard(what, () => this.onSwitch(this.sync.get("last_switch")));
    if (keys.has("download_focus_seq")) {
      const seq = this.sync.get("download_focus_seq") ?? 0;
      if (seq > this.focusSeq) this.downloads.openAndFocus();
      this.focusSeq = seq;
    }
  }

  private onSwitch(notice: SwitchNotice | null | undefined): void {
    if (!notice || notice.seq <= this.lastSwitchSeq) return;
    this.lastSwitchSeq = notice.seq;
    if (notice.conversation_id === this.sync.get("active_conversation")) {
      this.selector.flashSwitched();
      this.toasts.show(`Switched to ${notice.repo_id}`);
    }
  }

  /** Run a redraw; a failure is shown in the widget and logged, never swallowed. */
  private guard(what: string, redraw: () => void): void {
    try {
      redraw();
    } catch (error) {
      console.error(`chatwidget: failed to update after a change of ${what}`, error);
      this.errors.report(`The view could not show a change of ${what}: ${String(error)}`);
    }
  }
}
