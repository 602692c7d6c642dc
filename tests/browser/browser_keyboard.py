"""Keyboard-only driving: move focus with Tab / Shift+Tab like a user, and check the ring.

Nothing here clicks or calls ``focus()``: focus only moves through key presses, and every
element a test lands on must show a visible focus ring (``:focus-visible`` with a solid
outline of at least 2 px, or a box shadow).
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Locator, Page

_DESCRIBE_JS = """() => {
  const el = document.activeElement;
  if (!el) return '(nothing)';
  const name = el.getAttribute('aria-label') || (el.textContent || '').trim().slice(0, 30);
  return `${el.tagName.toLowerCase()}.${String(el.className).split(' ')[0]} "${name}"`;
}"""

_RING_JS = """(el) => {
  const s = getComputedStyle(el);
  return { focusVisible: el.matches(':focus-visible'), outlineStyle: s.outlineStyle,
           outlineWidth: parseFloat(s.outlineWidth) || 0, boxShadow: s.boxShadow };
}"""


def is_focused(target: Locator) -> bool:
    return bool(target.evaluate("(el) => el === document.activeElement"))


def press_until_focused(page: Page, target: Locator, key: str = "Tab", limit: int = 40) -> None:
    """Press ``key`` until ``target`` has focus (at most ``limit`` times), then check its ring."""
    trail: list[str] = []
    for _ in range(limit):
        if is_focused(target):
            assert_focus_ring(target)
            return
        page.keyboard.press(key)
        trail.append(str(page.evaluate(_DESCRIBE_JS)))
    raise AssertionError(
        f"{key} x{limit} never reached {target}; focus went:\n  " + "\n  ".join(trail)
    )


def focus_ring(target: Locator) -> dict[str, Any]:
    return dict(target.evaluate(_RING_JS))


def assert_focus_ring(target: Locator) -> None:
    """The focused ``target`` shows a ring a sighted keyboard user can see."""
    ring = focus_ring(target)
    outlined = ring["outlineStyle"] not in ("none", "hidden") and ring["outlineWidth"] >= 2
    shadowed = ring["boxShadow"] not in ("none", "")
    assert ring["focusVisible"], f"{target} has focus but not :focus-visible: {ring}"
    assert outlined or shadowed, f"{target} has no visible focus ring: {ring}"
