import { renderMarkdown, setMarkdown } from "../src/markdown";

function rendered(source: string): HTMLElement {
  const el = document.createElement("div");
  setMarkdown(el, source);
  return el;
}

describe("markdown", () => {
  it("renders an img tag with an onerror handler as text, creating no element", () => {
    const el = rendered("look <img src=x onerror=alert(1)> here");
    expect(el.querySelector("img")).toBeNull();
    expect(el.textContent).toContain("<img src=x onerror=alert(1)>");
  });

  it("renders a script tag as text", () => {
    const el = rendered("<script>alert(1)</script>\n\n<div onclick=x>hi</div>");
    expect(el.querySelector("script")).toBeNull();
    expect(el.querySelector("div[onclick]")).toBeNull();
    expect(el.textContent).toContain("<script>alert(1)</script>");
  });

  it("does not create images from markdown image syntax", () => {
    const el = rendered("![tracker](https://example.com/pixel.png)");
    expect(el.querySelector("img")).toBeNull();
  });

  it("drops javascript: links and opens safe links in a new tab", () => {
    const el = rendered("[bad](javascript:alert(1)) and [good](https://example.com)");
    const links = Array.from(el.querySelectorAll("a"));
    expect(links.map((a) => a.getAttribute("href"))).toEqual(["https://example.com"]);
    expect(links[0].getAttribute("target")).toBe("_blank");
    expect(links[0].getAttribute("rel")).toContain("noopener");
  });

  it("styles fenced code blocks with a language label and copy button", () => {
    const el = rendered("```python\nprint('<b>hi</b>')\n```");
    const block = el.querySelector(".cw-code");
    expect(block).not.toBeNull();
    expect(block!.getAttribute("data-lang")).toBe("python");
    expect(block!.querySelector("code.language-python")!.textContent).toBe("print('<b>hi</b>')\n");
    expect(block!.querySelector("b")).toBeNull();
    expect(block!.querySelector("button.cw-code-copy")!.textContent).toBe("Copy");
  });

  it("escapes a hostile fence language", () => {
    const html = renderMarkdown('```"><img src=x onerror=alert(1)>\ncode\n```');
    const el = document.createElement("div");
    el.innerHTML = html;
    expect(el.querySelector("img")).toBeNull();
  });

  it("renders emphasis, lists and inline code", () => {
    const el = rendered("**bold** and `x`\n\n- one\n- two");
    expect(el.querySelector("strong")!.textContent).toBe("bold");
    expect(el.querySelector("code")!.textContent).toBe("x");
    expect(el.querySelectorAll("li")).toHaveLength(2);
  });
});

describe("code copy button", () => {
  it("copies the code block's text to the clipboard", async () => {
    const { enableCodeCopy } = await import("../src/markdown");
    const root = document.createElement("div");
    setMarkdown(root, "```sh\necho '<hi>'\n```");
    document.body.append(root);
    const written: string[] = [];
    // jsdom has no clipboard: provide the one browser API this feature talks to.
    Object.defineProperty(navigator, "clipboard", {
      configurable: true,
      value: { writeText: async (text: string) => void written.push(text) },
    });
    const stop = enableCodeCopy(root);
    const button = root.querySelector<HTMLButtonElement>(".cw-code-copy")!;
    button.click();
    await vi.waitFor(() => expect(button.textContent).toBe("Copied"));
    expect(written).toEqual(["echo '<hi>'\n"]);
    stop();
    button.click();
    expect(written).toHaveLength(1);
    root.remove();
  });
});
