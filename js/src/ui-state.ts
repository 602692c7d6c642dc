// UI-only state (drafts, collapsed manager, dismissed errors). It never goes to the
// kernel. It is keyed by the model object render() receives: views that receive the same
// object (a re-render with the same model) share it. anywidget 0.11 hands each view its
// own model proxy, so there each view keeps its own UI state, while everything that
// matters (chat, queue, progress) comes from the kernel's traits in every view.

export interface UiState {
  /** Unsent text per conversation id. */
  drafts: Map<string, string>;
  /** null until the user collapses or expands the manager. */
  downloadsCollapsed: boolean | null;
  /** `seq` of kernel errors the user dismissed. */
  dismissedErrors: Set<number>;
  settingsOpen: boolean;
}

const states = new WeakMap<object, UiState>();

/** The UI state shared by all views of `model`. */
export function uiStateFor(model: object): UiState {
  let state = states.get(model);
  if (!state) {
    state = {
      drafts: new Map(),
      downloadsCollapsed: null,
      dismissedErrors: new Set(),
      settingsOpen: false,
    };
    states.set(model, state);
  }
  return state;
}
