"""Comparisons as Markdown (a table, then each reply) and as JSON, live or saved."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chatwidget.compare.types import CompareResult, column_label
from chatwidget.history.types import Comparison


def _cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _number(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def to_markdown(
    prompt: str,
    results: Sequence[CompareResult],
    *,
    mode: str | None = None,
    reason: str | None = None,
    winner: int | None = None,
) -> str:
    """A table (model, time to first token, tokens/s, tokens, status), then the replies."""
    lines = ["## Comparison", "", f"**Prompt:** {_cell(prompt)}", ""]
    if mode:
        lines += [f"**Run:** {mode}" + (f" — {reason}" if reason else ""), ""]
    lines += [
        "| Column | Model | Time to first token | Tokens/s | Tokens | Status |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results):
        model = r.model if r.model is not None else "(hidden until you vote)"
        mark = " ✓ better" if winner == i else ""
        tokens = "-" if r.new_tokens is None else str(r.new_tokens)
        lines.append(
            f"| {r.label}{mark} | {_cell(model)} | {_number(r.time_to_first_token_s, ' s')} "
            f"| {_number(r.tokens_per_s, '', 1)} | {tokens} | {r.status} |"
        )
    for r in results:
        title = r.label if r.model is None else f"{r.label}: {r.model}"
        body = r.text if r.text else "_(no text)_"
        if r.error:
            body += f"\n\n_Error: {r.error}_"
        lines += ["", f"### {title}", "", body]
    return "\n".join(lines) + "\n"


def to_dict(
    prompt: str,
    results: Sequence[CompareResult],
    *,
    blind: bool,
    mode: str | None = None,
    reason: str | None = None,
    winner: int | None = None,
) -> dict[str, Any]:
    """The comparison as plain JSON values (models hidden while a blind one has no vote)."""
    return {
        "prompt": prompt,
        "blind": blind,
        "mode": mode,
        "reason": reason,
        "vote": None if winner is None else results[winner].model or results[winner].label,
        "results": [
            {
                "label": r.label,
                "model": r.model,
                "text": r.text,
                "status": r.status,
                "error": r.error,
                "time_to_first_token_s": r.time_to_first_token_s,
                "tokens_per_s": r.tokens_per_s,
                "new_tokens": r.new_tokens,
            }
            for r in results
        ],
    }


def saved_results(comparison: Comparison) -> list[CompareResult]:
    """A saved comparison's answers as results (names shown: it is a record)."""
    from chatwidget.engine.types import Usage

    out = []
    for i, r in enumerate(comparison.results):
        u = r.usage
        usage = (
            None
            if u is None
            else Usage(
                model=r.model,
                prompt_tokens=u.prompt_tokens or 0,
                new_tokens=u.new_tokens or 0,
                time_to_first_token_s=u.time_to_first_token_s,
                tokens_per_s=u.tokens_per_s,
                duration_s=u.duration_s or 0.0,
            )
        )
        status = "failed" if r.status == "error" else r.status
        out.append(
            CompareResult(
                column_label(i),
                r.model,
                r.text,
                status if status in ("done", "stopped", "failed") else "done",
                usage,
                r.error,
            )
        )
    return out


def _winner(comparison: Comparison) -> int | None:
    models = comparison.models
    return models.index(comparison.vote) if comparison.vote in models else None


def comparison_markdown(comparison: Comparison) -> str:
    """A saved comparison (from ``chat.comparisons()``) as Markdown."""
    return to_markdown(comparison.prompt, saved_results(comparison), winner=_winner(comparison))


def comparison_json(comparison: Comparison) -> str:
    """A saved comparison as JSON text."""
    data = to_dict(
        comparison.prompt,
        saved_results(comparison),
        blind=comparison.blind,
        winner=_winner(comparison),
    )
    data["id"] = comparison.id
    data["created_at"] = comparison.created_at
    return json.dumps(data, ensure_ascii=False, indent=2)
