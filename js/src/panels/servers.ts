// Remote servers: the "Add a server" form (name, base URL, optional API key), the list of
// servers with their status, the 429 wait notice, and the selector's groups per server.
//
// The API key is typed into a password field, sent once in the `add_server` request and
// cleared from the field at once; it is never kept in this view's state, and the kernel
// never sends it back (trait `servers` says only whether a server has one).

import { h, setAttr, setText, uid } from "../dom";
import type { ModelRow, RemoteNoticeRow, ServerRow } from "../protocol";
import type { Rpc } from "../rpc";
import type { Store } from "../store";

/** Server names, as chatwidget/catalog.py's SERVER_NAME. */
const SERVER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export type ServerField = "name" | "base_url" | "api_key";

/** The first problem of a form's values (mirroring chatwidget/engine/remote/servers.py). */
export function serverFormProblem(values: {
  name: string;
  base_url: string;
  api_key: string;
}): { field: ServerField; message: string } | null {
  const name = values.name.trim();
  if (name !== "" && !SERVER_NAME.test(name)) {
    return {
      field: "name",
      message:
        "Use 1 to 64 letters, digits, '.', '_' or '-' for the name, starting with a letter " +
        "or digit (e.g. gpu), or leave it empty to use the host.",
    };
  }
  const url = values.base_url.trim();
  const example = "e.g. http://host:8000/v1";
  if (url === "") return { field: "base_url", message: `Type the server's base URL, ${example}.` };
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { field: "base_url", message: `That URL could not be read: use ${example}.` };
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    return {
      field: "base_url",
      message: `Only http:// and https:// server URLs are accepted: use ${example}.`,
    };
  }
  if (parsed.username !== "" || parsed.password !== "") {
    return {
      field: "base_url",
      message: "Leave the user name and key out of the URL: put the key in the API key field.",
    };
  }
  if (parsed.search !== "" || parsed.hash !== "" || /[?#]/.test(url)) {
    return {
      field: "base_url",
      message: `Give the base URL only, without '?...' or '#...', ${example}.`,
    };
  }
  const key = values.api_key.trim();
  if (key !== "" && /[\s\p{Cc}]/u.test(key)) {
    return {
      field: "api_key",
      message: "The API key holds spaces or control characters: paste the key alone.",
    };
  }
  return null;
}

/** The server of a model key ("gpu" for "gpu:org/name"), or null for a Hub repo id. */
export function serverOf(key: string): string | null {
  const at = key.indexOf(":");
  return at > 0 ? key.slice(0, at) : null;
}

/** The state a model row shows: a remote model at rest is "Available", not "Downloaded". */
export function modelStateLabel(row: ModelRow): string {
  return row.server !== null && row.state === "Downloaded" ? "Available" : row.state;
}

/** One line about a server's state: "Listing models…", "2 models", "Failed". */
export function serverStatusText(row: ServerRow): string {
  if (row.status === "listing") return "Listing models…";
  if (row.status === "failed") return "Failed";
  const n = row.models.length;
  return n === 1 ? "1 model" : `${n} models`;
}

/**
 * The selector's hook: put remote models' options into one <optgroup> per server, labelled
 * with the server's name, after the local models, in the order given. Groups no option
 * uses any more are removed. Options already in place are not moved.
 */
export function groupByServer(
  select: HTMLSelectElement,
  remote: ReadonlyArray<{ server: string; option: HTMLOptionElement }>,
): void {
  const groups = new Map<string, HTMLOptGroupElement>();
  for (const group of Array.from(select.querySelectorAll("optgroup"))) {
    groups.set(group.dataset.server ?? "", group);
  }
  const used = new Map<string, HTMLOptionElement[]>();
  for (const { server, option } of remote) {
    const list = used.get(server) ?? [];
    list.push(option);
    used.set(server, list);
  }
  let previous: HTMLOptGroupElement | null = null;
  for (const [server, options] of used) {
    let group = groups.get(server);
    if (!group) {
      group = h("optgroup", { label: server, "data-server": server });
      groups.set(server, group);
    }
    const inPlace =
      group.parentElement === select &&
      (previous === null || group.previousElementSibling === previous);
    if (!inPlace) {
      if (previous === null) select.append(group);
      else previous.after(group);
    }
    options.forEach((option, i) => {
      const at = group.children[i] ?? null;
      if (at !== option) group.insertBefore(option, at);
    });
    previous = group;
  }
  for (const [server, group] of groups) {
    if (!used.has(server)) group.remove(); // its options were removed by the selector
  }
}

/** A server's row in the list: name, URL, status, what went wrong, Retry and Remove. */
class ServerItem {
  readonly el: HTMLLIElement;
  private readonly statusEl: HTMLElement;
  private readonly urlEl: HTMLElement;
  private readonly errorEl: HTMLElement;
  private readonly actionEl: HTMLElement;
  private readonly retryButton: HTMLButtonElement;
  private readonly removeButton: HTMLButtonElement;
  private row: ServerRow;

  constructor(row: ServerRow, rpc: Rpc) {
    this.row = row;
    const nameEl = h("span", { class: "cw-server-name" }, [row.name]);
    this.statusEl = h("span", { class: "cw-state-pill" });
    this.urlEl = h("span", { class: "cw-server-url" });
    this.errorEl = h("p", { class: "cw-server-error", hidden: true });
    this.actionEl = h("p", { class: "cw-server-action", hidden: true });
    this.retryButton = h("button", { type: "button", class: "cw-btn cw-btn-small", hidden: true }, [
      "Retry",
    ]);
    this.retryButton.setAttribute("aria-label", `List the models of ${row.name} again`);
    this.retryButton.addEventListener("click", () => {
      void rpc.request({ kind: "refresh_server", name: this.row.name });
    });
    this.removeButton = h("button", { type: "button", class: "cw-btn cw-btn-small" }, ["Remove"]);
    this.removeButton.setAttribute("aria-label", `Remove server ${row.name}`);
    this.removeButton.addEventListener("click", () => {
      void rpc.request({ kind: "remove_server", name: this.row.name });
    });
    this.el = h("li", { class: "cw-server", "data-server": row.name }, [
      h("div", { class: "cw-server-head" }, [nameEl, this.statusEl]),
      this.urlEl,
      this.errorEl,
      this.actionEl,
      h("div", { class: "cw-server-actions" }, [this.retryButton, this.removeButton]),
    ]);
    this.update(row);
  }

  update(row: ServerRow): void {
    this.row = row;
    this.el.dataset.status = row.status;
    setText(this.statusEl, serverStatusText(row));
    this.statusEl.className = `cw-state-pill cw-server-${row.status}`;
    setText(this.urlEl, row.has_api_key ? `${row.base_url} · API key set` : row.base_url);
    setText(this.errorEl, row.error ?? "");
    this.errorEl.hidden = row.error === null;
    setText(this.actionEl, row.action ? `What to do: ${row.action}` : "");
    this.actionEl.hidden = !row.action;
    this.retryButton.hidden = !row.can_retry;
  }
}

/** The "Servers" section: the list and the "Add a server" form; and the wait notice. */
export class ServersPanel {
  readonly el: HTMLDetailsElement;
  /** The notice shown while a server asked us to wait (429); placed by the view. */
  readonly noticeEl: HTMLElement;
  readonly nameInput: HTMLInputElement;
  readonly urlInput: HTMLInputElement;
  readonly keyInput: HTMLInputElement;
  readonly addButton: HTMLButtonElement;
  private readonly formError: HTMLElement;
  private readonly list: HTMLUListElement;
  private readonly emptyEl: HTMLElement;
  private readonly items = new Map<string, ServerItem>();
  private noticeTimer: ReturnType<typeof setTimeout> | null = null;
  private shownNotice: number | null = null;

  constructor(
    private readonly store: Store,
    private readonly rpc: Rpc,
  ) {
    const errorId = uid("server-error");
    this.formError = h("p", {
      class: "cw-field-error",
      id: errorId,
      role: "alert",
      hidden: true,
    });
    const field = (label: string, input: HTMLInputElement): HTMLElement =>
      h("div", { class: "cw-field" }, [h("label", { for: input.id }, [label]), input]);
    const input = (attrs: Record<string, string>): HTMLInputElement =>
      h("input", {
        class: "cw-input",
        autocomplete: "off",
        spellcheck: "false",
        "aria-describedby": errorId,
        ...attrs,
      });
    this.nameInput = input({ id: uid("server-name"), type: "text", placeholder: "gpu" });
    this.urlInput = input({
      id: uid("server-url"),
      type: "url",
      placeholder: "http://host:8000/v1",
      required: "",
    });
    this.keyInput = input({
      id: uid("server-key"),
      type: "password",
      placeholder: "optional",
      autocomplete: "new-password",
    });
    this.addButton = h("button", { type: "submit", class: "cw-btn" }, ["Add server"]);
    const form = h(
      "form",
      { class: "cw-add-server", "aria-label": "Add a server", novalidate: true },
      [
        h("p", { class: "cw-form-title" }, ["Add a server"]),
        field("Name", this.nameInput),
        field("Base URL", this.urlInput),
        field("API key", this.keyInput),
        this.formError,
        h("div", { class: "cw-row" }, [this.addButton]),
      ],
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.add();
    });
    for (const el of [this.nameInput, this.urlInput, this.keyInput]) {
      el.addEventListener("input", () => this.showError(null));
    }
    this.list = h("ul", { class: "cw-server-list", "aria-label": "Servers" });
    this.emptyEl = h("p", { class: "cw-server-empty" }, [
      "No servers yet: add an OpenAI-compatible one (vLLM, SGLang, transformers serve…).",
    ]);
    this.el = h("details", { class: "cw-servers" }, [
      h("summary", { class: "cw-section-title" }, ["Servers"]),
      h("div", { class: "cw-servers-body" }, [this.list, this.emptyEl, form]),
    ]);
    this.noticeEl = h("p", {
      class: "cw-remote-notice",
      role: "status",
      "aria-live": "polite",
      hidden: true,
    });
  }

  /** Redraw from trait `servers`. */
  update(): void {
    const rows = this.store.servers;
    const seen = new Set<string>();
    let anchor: Element | null = this.list.firstElementChild;
    for (const row of rows) {
      seen.add(row.name);
      let item = this.items.get(row.name);
      if (item) item.update(row);
      else {
        item = new ServerItem(row, this.rpc);
        this.items.set(row.name, item);
      }
      if (item.el === anchor) anchor = anchor.nextElementSibling;
      else this.list.insertBefore(item.el, anchor);
    }
    for (const [name, item] of this.items) {
      if (!seen.has(name)) {
        item.el.remove();
        this.items.delete(name);
      }
    }
    this.emptyEl.hidden = rows.length > 0;
    this.showNotice(rows.find((r) => r.notice !== null)?.notice ?? null);
  }

  destroy(): void {
    if (this.noticeTimer !== null) clearTimeout(this.noticeTimer);
    this.noticeTimer = null;
  }

  private showNotice(notice: RemoteNoticeRow | null): void {
    if (notice !== null && notice.seq === this.shownNotice) return;
    if (this.noticeTimer !== null) clearTimeout(this.noticeTimer);
    this.noticeTimer = null;
    this.shownNotice = notice?.seq ?? null;
    setText(this.noticeEl, notice?.message ?? "");
    this.noticeEl.hidden = notice === null;
    if (notice !== null) {
      // The kernel clears it when the wait ends; hide it here too should that update lag.
      this.noticeTimer = setTimeout(
        () => {
          this.noticeEl.hidden = true;
          this.noticeTimer = null;
        },
        notice.retry_in_s * 1000 + 1000,
      );
    }
  }

  private async add(): Promise<void> {
    const values = {
      name: this.nameInput.value.trim(),
      base_url: this.urlInput.value.trim(),
      api_key: this.keyInput.value.trim(),
    };
    const problem = serverFormProblem(values);
    if (problem) {
      this.showError(problem.message, problem.field);
      return;
    }
    // The key leaves the page once, in this request; the field is cleared at once.
    this.keyInput.value = "";
    this.addButton.disabled = true;
    const reply = await this.rpc.request({ kind: "add_server", ...values }, { quiet: true });
    this.addButton.disabled = false;
    if (reply.ok) {
      this.nameInput.value = "";
      this.urlInput.value = "";
      this.showError(null);
      this.el.open = true;
    } else {
      this.showError(reply.error ?? "The kernel refused this server.", "base_url");
    }
  }

  private showError(message: string | null, fieldName?: ServerField): void {
    setText(this.formError, message ?? "");
    this.formError.hidden = message === null;
    const fields: Record<ServerField, HTMLInputElement> = {
      name: this.nameInput,
      base_url: this.urlInput,
      api_key: this.keyInput,
    };
    for (const [name, input] of Object.entries(fields)) {
      setAttr(input, "aria-invalid", message !== null && name === fieldName ? "true" : null);
    }
    if (message !== null && fieldName) fields[fieldName].focus();
  }
}
