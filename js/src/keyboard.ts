// Keeps the notebook's keyboard shortcuts from reacting to keys meant for the widget.
//
// Plain keys (typing, Enter, Shift+Enter, Escape, arrows, Tab) belong to the widget: in
// command mode "A", "B" or "D D" would otherwise edit the notebook, Shift+Enter would run
// the widget's cell again, and Enter on a focused button would not click it.
// Ctrl/Cmd/Alt combinations go to the notebook (Ctrl+S still saves), except the
// text-editing ones inside a text field.
//
// Lumino apps listen on the document: JupyterLab in the bubbling phase, Notebook 7 in the
// capture phase, before the event reaches the widget. So two things happen:
// - a window capture listener (which runs before any document listener) sets Lumino's
//   `data-lm-suppress-shortcuts` on the root for keys the widget owns, and removes it for
//   the others, so the app's keymap skips exactly those keys;
// - the root stops the widget's keys from bubbling further, for any other listener.

const TEXT_EDITING_KEYS = new Set(
  ["a", "c", "v", "x", "z", "y", "ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].concat([
    "Home",
    "End",
    "Backspace",
    "Delete",
  ]),
);

function isTextField(target: EventTarget | null): boolean {
  return target instanceof HTMLTextAreaElement || target instanceof HTMLInputElement;
}

/** Whether a keydown inside the widget should be kept from the notebook. */
export function keepsKeyFromNotebook(event: KeyboardEvent): boolean {
  const modified = event.ctrlKey || event.metaKey || event.altKey;
  if (!modified) return true;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  return isTextField(event.target) && TEXT_EDITING_KEYS.has(key);
}

const SUPPRESS = "data-lm-suppress-shortcuts";

/** Keep the keys the widget owns inside `root`; returns the cleanup. */
export function isolateKeys(root: HTMLElement): () => void {
  const win = root.ownerDocument.defaultView;
  const beforeTheApp = (event: KeyboardEvent): void => {
    if (!(event.target instanceof Node) || !root.contains(event.target)) return;
    if (keepsKeyFromNotebook(event)) root.setAttribute(SUPPRESS, "true");
    else root.removeAttribute(SUPPRESS);
  };
  const onKeydown = (event: KeyboardEvent): void => {
    if (keepsKeyFromNotebook(event)) event.stopPropagation();
  };
  win?.addEventListener("keydown", beforeTheApp, true);
  root.addEventListener("keydown", onKeydown);
  return () => {
    win?.removeEventListener("keydown", beforeTheApp, true);
    root.removeEventListener("keydown", onKeydown);
  };
}
