// Tiny DOM helpers. Text always goes in as text nodes: nothing here parses HTML.

type AttrValue = string | number | boolean | null | undefined;
type Child = Node | string | null | undefined | false;

/** Create an element with attributes (false/null/undefined are skipped) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, AttrValue> = {},
  children: Child[] = [],
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

/** Set or remove an attribute depending on `value`. */
export function setAttr(node: Element, name: string, value: AttrValue): void {
  if (value === false || value === null || value === undefined) node.removeAttribute(name);
  else node.setAttribute(name, value === true ? "" : String(value));
}

/** Set textContent only when it changes, so unchanged nodes are left alone. */
export function setText(node: Node, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

let nextUid = 0;
/** A document-unique id for aria-labelledby/aria-describedby links. */
export function uid(prefix: string): string {
  nextUid += 1;
  return `cw-${prefix}-${nextUid}`;
}

/**
 * The element that has focus in the tree `node` lives in: its shadow root when it is in
 * one (marimo renders widgets in a shadow DOM, where the document's activeElement is only
 * the shadow host), else its document.
 */
export function activeElementOf(node: Node): Element | null {
  const root = node.getRootNode();
  if (root instanceof ShadowRoot) return root.activeElement;
  return node.ownerDocument?.activeElement ?? null;
}
