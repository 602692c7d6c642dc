// anywidget entry point: render() mounts the chat, model selector and download manager
// into `el` and returns the cleanup that removes them and every listener they added.

import type { RenderProps } from "@anywidget/types";
import "./styles.css";
import type { WidgetState } from "./protocol";
import { WidgetView } from "./view";

function render({ model, el }: Pick<RenderProps<WidgetState>, "model" | "el">): () => void {
  const view = new WidgetView(model, el);
  return () => view.destroy();
}

export default { render };
