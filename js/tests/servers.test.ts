import { within } from "@testing-library/dom";
import userEvent from "@testing-library/user-event";
import { groupByServer, serverFormProblem, serverOf } from "../src/panels/servers";
import type { ServerRow } from "../src/protocol";
import { REPO_A, conversation, download, flush, modelRow, mountPerTest } from "./fake-model";

const open = mountPerTest();
afterEach(() => {
  vi.useRealTimers();
});

const KEY = "gpu:Qwen/Qwen2.5-7B-Instruct";
const SECRET = "sk-very-secret-123";

function server(overrides: Partial<ServerRow> = {}): ServerRow {
  return {
    name: "gpu",
    base_url: "http://host:8000/v1",
    status: "ready",
    error: null,
    action: null,
    can_retry: false,
    has_api_key: false,
    models: [KEY],
    notice: null,
    ...overrides,
  };
}

function form(el: HTMLElement) {
  const f = within(el).getByRole("form", { name: "Add a server" });
  return {
    name: within(f).getByLabelText<HTMLInputElement>("Name"),
    url: within(f).getByLabelText<HTMLInputElement>("Base URL"),
    key: within(f).getByLabelText<HTMLInputElement>("API key"),
    add: within(f).getByRole("button", { name: "Add server" }),
    form: f,
  };
}

describe("servers panel", () => {
  it("checks the form like the kernel does, with a message that says what to type", () => {
    const ok = { name: "gpu", base_url: "http://host:8000/v1", api_key: "" };
    expect(serverFormProblem(ok)).toBeNull();
    expect(serverFormProblem({ ...ok, name: "" })).toBeNull(); // the host names it
    expect(serverFormProblem({ ...ok, base_url: "https://h/v1", api_key: SECRET })).toBeNull();
    const cases: Array<[Partial<typeof ok>, string, RegExp]> = [
      [{ base_url: "" }, "base_url", /base URL/],
      [{ base_url: "ftp://host/v1" }, "base_url", /Only http/],
      [{ base_url: "javascript:alert(1)" }, "base_url", /Only http/],
      [{ base_url: "host:8000" }, "base_url", /Only http/],
      [{ base_url: "http://u:p@host/v1" }, "base_url", /user name/],
      [{ base_url: "http://host/v1?key=1" }, "base_url", /base URL only/],
      [{ name: "bad name!" }, "name", /letters, digits/],
      [{ api_key: "two words" }, "api_key", /spaces/],
    ];
    for (const [change, field, message] of cases) {
      const problem = serverFormProblem({ ...ok, ...change });
      expect(problem?.field).toBe(field);
      expect(problem?.message).toMatch(message);
    }
    expect(serverOf(KEY)).toBe("gpu");
    expect(serverOf(REPO_A)).toBeNull();
  });

  it("sends add_server once with the key, clears the key field at once, never stores it", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const f = form(el);
    await user.type(f.name, "gpu");
    await user.type(f.url, "http://host:8000/v1");
    await user.type(f.key, SECRET);
    expect(f.key.type).toBe("password");
    await user.click(f.add);
    expect(model.intents()).toEqual([
      expect.objectContaining({
        kind: "add_server",
        name: "gpu",
        base_url: "http://host:8000/v1",
        api_key: SECRET,
      }),
    ]);
    expect(f.key.value).toBe(""); // cleared before the kernel answers
    model.reply(true);
    await flush();
    expect(f.url.value).toBe("");
    // the key is in no model write and nowhere on the page
    expect(model.writes).toEqual([]);
    expect(el.innerHTML).not.toContain(SECRET);
  });

  it("shows validation errors inline, on the field at fault, and sends nothing", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const f = form(el);
    await user.type(f.url, "ftp://host/v1");
    await user.click(f.add);
    expect(model.intents()).toEqual([]);
    expect(within(f.form).getByRole("alert")).toHaveTextContent("Only http:// and https://");
    expect(f.url).toHaveAttribute("aria-invalid", "true");
    expect(f.url).toHaveFocus();
    await user.type(f.url, "x"); // typing clears the error
    expect(within(f.form).queryByRole("alert")).toBeNull();
    expect(f.url).not.toHaveAttribute("aria-invalid");
  });

  it("shows the kernel's refusal inline and keeps what was typed but the key", async () => {
    const user = userEvent.setup();
    const { model, el } = open();
    const f = form(el);
    await user.type(f.name, "gpu");
    await user.type(f.url, "http://other:8000/v1");
    await user.type(f.key, SECRET);
    await user.click(f.add);
    model.reply(false, "A server named 'gpu' already points at http://host:8000/v1: pick another");
    await flush();
    expect(within(f.form).getByRole("alert")).toHaveTextContent("already points at");
    expect(f.url.value).toBe("http://other:8000/v1");
    expect(f.key.value).toBe("");
  });

  it("lists servers with their status, error, Retry and Remove", async () => {
    const user = userEvent.setup();
    const { model, el } = open({
      servers: [
        server({ has_api_key: true }),
        server({
          name: "down",
          base_url: "http://down:1/v1",
          status: "failed",
          models: [],
          error: "Server 'down' could not be reached",
          action: "Check the server",
          can_retry: true,
        }),
        server({ name: "slow", status: "listing", models: [] }),
      ],
    });
    const list = within(el).getByRole("list", { name: "Servers" });
    const items = within(list).getAllByRole("listitem");
    expect(items.map((i) => i.dataset.server)).toEqual(["gpu", "down", "slow"]);
    expect(items[0]).toHaveTextContent("gpu1 modelhttp://host:8000/v1 · API key set");
    expect(items[1]).toHaveTextContent("Failed");
    expect(items[1]).toHaveTextContent("could not be reached");
    expect(items[1]).toHaveTextContent("What to do: Check the server");
    expect(items[2]).toHaveTextContent("Listing models…");
    expect(within(items[0]).queryByRole("button", { name: /List the models/ })).toBeNull();
    await user.click(
      within(items[1]).getByRole("button", { name: "List the models of down again" }),
    );
    await user.click(within(items[0]).getByRole("button", { name: "Remove server gpu" }));
    expect(model.intents()).toEqual([
      expect.objectContaining({ kind: "refresh_server", name: "down" }),
      expect.objectContaining({ kind: "remove_server", name: "gpu" }),
    ]);
    model.update({ servers: [server({ name: "slow", models: [] })] });
    const after = within(list).getAllByRole("listitem");
    expect(after).toHaveLength(1);
    expect(after[0]).toBe(items[2]); // updated in place
    expect(after[0]).toHaveTextContent("0 models");
  });

  it("groups remote models per server in the selector, after the local ones", async () => {
    const user = userEvent.setup();
    const remoteRow = modelRow({
      repo_id: KEY,
      name: "Qwen/Qwen2.5-7B-Instruct",
      size_bytes: null,
      state: "Downloaded",
      server: "gpu",
    });
    const other = modelRow({
      repo_id: "lab:meta/llama",
      name: "meta/llama",
      size_bytes: null,
      state: "Connecting",
      server: "lab",
    });
    const { model, el } = open({ models: [modelRow(), remoteRow, other] });
    const select = within(el).getByRole<HTMLSelectElement>("combobox", { name: "Model" });
    const groups = Array.from(select.querySelectorAll("optgroup"));
    expect(groups.map((g) => g.label)).toEqual(["gpu", "lab"]);
    expect(groups[0].querySelector("option")).toHaveTextContent(
      "Qwen/Qwen2.5-7B-Instruct · Available",
    );
    expect(groups[1].querySelector("option")).toHaveTextContent("meta/llama · Connecting");
    expect(select.options[1].parentElement).toBe(select); // the local model stays on top
    await user.selectOptions(select, KEY);
    expect(model.intents()[0]).toMatchObject({ kind: "select_model", repo_id: KEY });
    // a server removed: its group goes; the others stay where they are
    const kept = groups[1];
    model.update({ models: [modelRow(), other] });
    expect(Array.from(select.querySelectorAll("optgroup"))).toEqual([kept]);
  });

  it("keeps options in place across updates (groupByServer moves nothing needlessly)", () => {
    const select = document.createElement("select");
    const a = document.createElement("option");
    const b = document.createElement("option");
    const c = document.createElement("option");
    groupByServer(select, [
      { server: "s1", option: a },
      { server: "s2", option: b },
      { server: "s1", option: c },
    ]);
    const [g1, g2] = Array.from(select.querySelectorAll("optgroup"));
    expect(Array.from(g1.children)).toEqual([a, c]);
    expect(Array.from(g2.children)).toEqual([b]);
    const observer = new MutationObserver(() => undefined);
    observer.observe(select, { childList: true, subtree: true });
    groupByServer(select, [
      { server: "s1", option: a },
      { server: "s2", option: b },
      { server: "s1", option: c },
    ]);
    expect(observer.takeRecords()).toEqual([]);
    observer.disconnect();
  });

  it("shows a remote row's server instead of bytes, and Connecting as it goes", () => {
    const { el } = open({
      conversations: [conversation({ requested_model: KEY })],
      models: [
        modelRow(),
        modelRow({
          repo_id: KEY,
          name: "Qwen",
          size_bytes: null,
          server: "gpu",
          state: "Connecting",
        }),
      ],
      downloads: [
        download({
          repo_id: KEY,
          state: "Connecting",
          bytes_done: 0,
          bytes_total: 0,
          server: "gpu",
        }),
      ],
    });
    const rows = el.querySelectorAll(".cw-dl-row, [data-state='connecting']");
    expect(rows.length).toBeGreaterThan(0);
    expect(el.querySelector(".cw-dl-bytes")).toHaveTextContent("Server gpu");
    expect(within(el).getByText(/Waiting for Qwen \(Connecting\)/)).toBeVisible();
  });

  it("shows a 429 wait while it lasts", () => {
    vi.useFakeTimers();
    const notice = {
      seq: 1,
      model: KEY,
      phase: "reply" as const,
      message: "Server 'gpu' is busy (429 Too Many Requests): retrying in 2 s, attempt 2 of 5",
      retry_in_s: 2,
    };
    const { model, el } = open({ servers: [server({ notice })] });
    const status = el.querySelector<HTMLElement>(".cw-remote-notice");
    expect(status).not.toBeNull();
    expect(status).toHaveAttribute("role", "status");
    expect(status).toHaveTextContent("retrying in 2 s");
    expect(status?.hidden).toBe(false);
    model.update({ servers: [server()] }); // the kernel says the wait is over
    expect(status?.hidden).toBe(true);
    model.update({ servers: [server({ notice: { ...notice, seq: 2, retry_in_s: 1 } })] });
    expect(status?.hidden).toBe(false);
    vi.advanceTimersByTime(2100); // and should that update not come, it goes by itself
    expect(status?.hidden).toBe(true);
  });
});

it("offers Retry on a reply that failed mid-stream, keeping its text", async () => {
  const user = userEvent.setup();
  const { model, el } = open({
    transcript: {
      conversation_id: "c1",
      epoch: 0,
      start: 0,
      total: 2,
      messages: [
        {
          id: "m1",
          role: "user",
          content: "hi",
          status: "done",
          model: null,
          new_tokens: null,
          tokens_per_s: null,
          error: null,
          chunks: 0,
        },
        {
          id: "m2",
          role: "assistant",
          content: "Half a rep",
          status: "error",
          model: KEY,
          new_tokens: null,
          tokens_per_s: null,
          error: "The stream from server 'gpu' was cut off mid-reply. Retry.",
          chunks: 0,
        },
      ],
    },
  });
  expect(within(el).getByText("Half a rep")).toBeVisible();
  await user.click(within(el).getByRole("button", { name: "Retry" }));
  expect(model.intents()[0]).toMatchObject({ kind: "regenerate" });
});
