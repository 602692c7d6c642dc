// Keeps JupyterLab's notebook shortcuts from reacting to keys meant for the widget.
//
// JupyterLab listens for keydown on the document in the bubbling phase, so a key whose
// propagation stops at the widget's root never reaches it. Plain keys (typing, Enter,
// Escape, arrows, Tab, Shift+…) stop here: in command mode "A", "B", "D D" or Enter would
// otherwise edit the notebook, and Enter on a focused button would not click it.
// Ctrl/Cmd/Alt combinations pass through (Ctrl+S still saves, Shift+Enter-style cell
// commands still run from outside), except the text-editing ones inside a text field.

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

/** Stop the keys the widget owns at `root`; returns the cleanup. */
export function isolateKeys(root: HTMLElement): () => void {
  const onKeydown = (event: KeyboardEvent): void => {
    if (keepsKeyFromNotebook(event)) event.stopPropagation();
  };
  root.addEventListener("keydown", onKeydown);
  return () => root.removeEventListener("keydown", onKeydown);
}
