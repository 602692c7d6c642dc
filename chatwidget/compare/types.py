"""Value types of compare mode: one column's result, and how the columns are scheduled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chatwidget.engine.types import Usage

#: How the columns run: one after another, or at the same time.
Mode = Literal["sequential", "concurrent"]
#: Where a column is: waiting for its model (or its turn), streaming, or finished.
ColumnStatus = Literal["waiting", "streaming", "done", "stopped", "failed"]
#: Most models one comparison takes.
MAX_MODELS = 3
#: Fewest models one comparison takes.
MIN_MODELS = 2
#: The least share of its solo tokens/s a model may keep when the columns run together.
CONCURRENCY_FLOOR = 0.9


def column_label(index: int) -> str:
    """``Model A``, ``Model B``, ...: a column's name while names are hidden."""
    return f"Model {chr(ord('A') + index)}"


@dataclass(frozen=True)
class Schedule:
    """How a comparison runs, and why, in words the view shows."""

    mode: Mode
    reason: str
    fits_together: bool


@dataclass(frozen=True)
class CompareResult:
    """One model's answer to the compared prompt.

    ``model`` is None while a blind comparison has no vote yet (``label`` names the column,
    "Model A"); the usage carries time to first token, tokens/s and the token count.
    """

    label: str
    model: str | None
    text: str
    status: ColumnStatus
    usage: Usage | None = None
    error: str | None = None

    @property
    def time_to_first_token_s(self) -> float | None:
        return None if self.usage is None else self.usage.time_to_first_token_s

    @property
    def tokens_per_s(self) -> float | None:
        return None if self.usage is None else self.usage.tokens_per_s

    @property
    def new_tokens(self) -> int | None:
        return None if self.usage is None else self.usage.new_tokens
