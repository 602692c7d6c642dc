// Safe Markdown for assistant replies: markdown-it with raw HTML off.
//
// markdown-it escapes all text it emits, so its output is the ONLY string this widget
// ever assigns to innerHTML. Images are disabled (a reply must not make the browser fetch
// arbitrary URLs), links are limited to markdown-it's safe schemes and open in a new tab.

import MarkdownIt from "markdown-it";

const md = new MarkdownIt({ html: false, linkify: false, typographer: false, breaks: true });
md.disable("image");

const escapeHtml = md.utils.escapeHtml;

md.renderer.rules.fence = (tokens, idx) => {
  const token = tokens[idx];
  const lang = token.info.trim().split(/\s+/)[0] ?? "";
  const langClass = lang ? ` class="language-${escapeHtml(lang)}"` : "";
  const label = escapeHtml(lang || "text");
  return (
    `<div class="cw-code" data-lang="${label}">` +
    `<div class="cw-code-header"><span class="cw-code-lang">${label}</span>` +
    `<button type="button" class="cw-code-copy" aria-label="Copy code">Copy</button></div>` +
    `<pre><code${langClass}>${escapeHtml(token.content)}</code></pre></div>\n`
  );
};
md.renderer.rules.code_block = (tokens, idx) =>
  `<div class="cw-code" data-lang="text"><pre><code>${escapeHtml(tokens[idx].content)}</code></pre></div>\n`;

const defaultLinkOpen =
  md.renderer.rules.link_open ??
  ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options));
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet("target", "_blank");
  tokens[idx].attrSet("rel", "noopener noreferrer nofollow");
  return defaultLinkOpen(tokens, idx, options, env, self);
};

/** Render Markdown to escaped HTML (no raw HTML, no images). */
export function renderMarkdown(source: string): string {
  return md.render(source);
}

/** Replace `target`'s content with the rendered Markdown of `source`. */
export function setMarkdown(target: HTMLElement, source: string): void {
  target.innerHTML = renderMarkdown(source);
}

/** Wire the "Copy" buttons of code blocks inside `root` (event delegation; returns cleanup). */
export function enableCodeCopy(root: HTMLElement): () => void {
  const onClick = (event: Event): void => {
    const button = (event.target as Element | null)?.closest?.(".cw-code-copy");
    if (!(button instanceof HTMLButtonElement)) return;
    const code = button.closest(".cw-code")?.querySelector("code")?.textContent ?? "";
    const clipboard = globalThis.navigator?.clipboard;
    if (!clipboard) return;
    clipboard.writeText(code).then(
      () => {
        button.textContent = "Copied";
        setTimeout(() => {
          button.textContent = "Copy";
        }, 1500);
      },
      () => {
        button.textContent = "Copy failed";
      },
    );
  };
  root.addEventListener("click", onClick);
  return () => root.removeEventListener("click", onClick);
}
