// Client-side check of a Hugging Face repo id, mirroring chatwidget/catalog.py.

const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

/** null when `text` is a valid "org/name" repo id, else a message saying how to fix it. */
export function repoIdProblem(text: string): string | null {
  const value = text.trim();
  if (value === "") return "Type a model id such as HuggingFaceTB/SmolLM2-135M-Instruct.";
  if (!REPO_ID.test(value)) {
    return (
      "Use the form org/name with letters, digits, '-', '_' or '.', " +
      "e.g. HuggingFaceTB/SmolLM2-135M-Instruct."
    );
  }
  if (value.includes("..") || /[.-]$/.test(value)) {
    return "A model id cannot contain '..' or end with '.' or '-'.";
  }
  return null;
}
