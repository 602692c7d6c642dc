"""Human-readable sizes."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (decimal units, as download managers show them)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover
