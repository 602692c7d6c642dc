// One rendered view of the widget: builds the layout, wires traits to panels, and
// removes every listener, timer and node it added when destroyed.

import { h } from "./dom";
import { isolateKeys } from "./keyboard";
import { ChatPanel } from "./panels/chat";
import { ConversationsPanel } from "./panels/conversations";
import { Dialogs } from "./panels/dialog";
import { DownloadsPanel } from "./panels/downloads";
import { ErrorArea } from "./panels/errors";
import { SelectorPanel } from "./panels/selector";
import { SettingsPanel } from "./panels/settings";
import { Toasts } from "./panels/toast";
import type { SwitchNotice } from "./protocol";
import { Rpc } from "./rpc";
import { Listeners, Store, type WidgetModel } from "./store";
import { uiStateFor } from "./ui-state";

export class WidgetView {
  readonly root: HTMLElement;
  private readonly listeners: Listeners;
  private readonly rpc: Rpc;
  private readonly toasts = new Toasts();
  private readonly dialogs: Dialogs;
  private readonly errors: ErrorArea;
  private readonly chat: ChatPanel;
  private readonly conversations: ConversationsPanel;
  private readonly selector: SelectorPanel;
  private readonly settings: SettingsPanel;
  private readonly downloads: DownloadsPanel;
  private readonly releaseKeys: () => void;
  private lastSwitchSeq: number;
  private focusSeq: number;

  constructor(
    private readonly model: WidgetModel,
    el: HTMLElement,
  ) {
    const store = new Store(model);
    const ui = uiStateFor(model);
    this.listeners = new Listeners(model);
    this.root = h("div", { class: "cw-root", tabindex: -1 });
    this.releaseKeys = isolateKeys(this.root);
    this.errors = new ErrorArea(ui, () => this.chat.textbox.focus());
    this.rpc = new Rpc(model, (message) => this.errors.report(message));
    this.dialogs = new Dialogs(this.root);
    this.chat = new ChatPanel(store, this.rpc, ui);
    this.conversations = new ConversationsPanel(store, this.rpc, this.dialogs);
    this.selector = new SelectorPanel(store, this.rpc);
    this.settings = new SettingsPanel(store, this.rpc, ui);
    this.downloads = new DownloadsPanel(this.rpc, this.dialogs, ui);

    this.root.append(
      // A div, not a <header>: inside a notebook a header is a banner landmark nested in the
      // page's own landmarks (axe-core: landmark-banner-is-top-level).
      h("div", { class: "cw-topbar" }, [
        h("span", { class: "cw-brand", "aria-hidden": "true" }, ["◆"]),
        this.selector.el,
      ]),
      this.errors.el,
      h("div", { class: "cw-body" }, [
        h("aside", { class: "cw-panel cw-sidebar", "aria-label": "Conversations and settings" }, [
          this.conversations.el,
          this.settings.el,
        ]),
        this.chat.el,
        this.downloads.el,
      ]),
      this.toasts.el,
    );

    // Only changes that happen while this view is alive announce themselves.
    this.lastSwitchSeq = model.get("last_switch")?.seq ?? 0;
    this.focusSeq = model.get("download_focus_seq") ?? 0;

    const on = (trait: string, redraw: () => void): void =>
      this.listeners.on(`change:${trait}`, () => this.guard(trait, redraw));
    on("models", () => {
      this.selector.update();
      this.chat.update();
      this.conversations.update();
    });
    on("conversations", () => {
      this.chat.update();
      this.selector.update();
      this.conversations.update();
    });
    on("active_conversation", () => {
      this.chat.update();
      this.selector.update();
      this.conversations.update();
    });
    on("downloads", () => {
      this.downloads.update(store.downloads);
      this.selector.update();
      this.chat.update();
    });
    on("settings", () => this.settings.update());
    on("generating", () => this.chat.update());
    on("errors", () => this.errors.setKernelErrors(model.get("errors") ?? []));
    on("last_switch", () => this.onSwitch(model.get("last_switch")));
    on("download_focus_seq", () => {
      const seq = model.get("download_focus_seq") ?? 0;
      if (seq > this.focusSeq) this.downloads.openAndFocus();
      this.focusSeq = seq;
    });

    this.guard("initial render", () => {
      this.downloads.update(store.downloads);
      this.selector.update();
      this.conversations.update();
      this.settings.update();
      this.chat.update();
      this.errors.setKernelErrors(model.get("errors") ?? []);
    });
    el.append(this.root);
  }

  destroy(): void {
    this.listeners.dispose();
    this.releaseKeys();
    this.rpc.dispose();
    this.dialogs.destroy();
    this.toasts.destroy();
    this.selector.destroy();
    this.chat.destroy();
    this.root.remove();
  }

  private onSwitch(notice: SwitchNotice | null | undefined): void {
    if (!notice || notice.seq <= this.lastSwitchSeq) return;
    this.lastSwitchSeq = notice.seq;
    if (notice.conversation_id === this.model.get("active_conversation")) {
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
