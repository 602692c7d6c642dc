"""axe-core in the browser tests: inject it into the page and audit the widget only.

axe-core comes from npm (``js/node_modules/axe-core``, a devDependency of the front end), so
setup.sh installs it with the rest of the JS toolchain. Each audit runs every rule axe has
(no tags chosen, none turned off) on the widget's element, and its result is written to
``test-artifacts/axe/<name>.json`` so the README's claim can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
AXE_JS = REPO_ROOT / "js" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "axe"

_RUN_JS = """
async (el) => {
  const result = await window.axe.run(el, { resultTypes: ['violations'] });
  return {
    version: window.axe.version,
    passes: result.passes.length,
    violations: result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })),
    })),
  };
}
"""


def audit(page: Page, widget: Locator, name: str) -> dict[str, Any]:
    """Run axe-core on ``widget``; save and return ``{version, passes, violations}``."""
    if not page.evaluate("() => Boolean(window.axe)"):
        page.add_script_tag(path=str(AXE_JS))
    result: dict[str, Any] = widget.first.evaluate(_RUN_JS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def describe(result: dict[str, Any]) -> str:
    """The violations, one per line with where they are, for an assertion message."""
    lines = []
    for v in result["violations"]:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"][:5]:
            lines.append(f"    at {node['target']}: {node['summary']}")
    return "\n".join(lines)
