"""The handle ``chat.compare(...)`` returns: wait for the replies, vote, export."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chatwidget.compare import export
from chatwidget.compare.run import CompareRun, timed_out
from chatwidget.compare.types import CompareResult, Schedule


class CompareHandle:
    """One comparison. ``wait()`` returns one :class:`CompareResult` per model, in the order
    shown; in blind mode ``model`` is None (``label`` is "Model A", ...) until :meth:`vote`."""

    def __init__(self, run: CompareRun, on_vote: Callable[[CompareRun, int], None]) -> None:
        self._run = run
        self._on_vote = on_vote

    @property
    def id(self) -> str:
        return self._run.id

    @property
    def prompt(self) -> str:
        return self._run.prompt

    @property
    def blind(self) -> bool:
        return self._run.blind

    @property
    def done(self) -> bool:
        return self._run.done

    @property
    def schedule(self) -> Schedule | None:
        """Whether the models run one after another or together, and why (None until the
        comparison has decided, a moment after it starts)."""
        return self._run.schedule

    @property
    def comparison_id(self) -> str | None:
        """The id of its record in the conversation store, once saved (when it ends)."""
        return self._run.comparison_id

    @property
    def results(self) -> list[CompareResult]:
        """The results now (text so far while the replies stream)."""
        return self._run.results()

    @property
    def winner(self) -> CompareResult | None:
        vote = self._run.vote
        return None if vote is None else self._run.results()[vote]

    def wait(self, timeout: float | None = None) -> list[CompareResult]:
        """Block until every column is done (or failed, or stopped); its results.

        Raises ``TimeoutError`` when not done in time (the comparison goes on)."""
        if not self._run.wait(timeout):
            raise timed_out(self._run, timeout)
        return self._run.results()

    def stop(self) -> None:
        """Stop every reply, keeping what each wrote."""
        self._run.stop()

    def vote(self, choice: int | str) -> CompareResult:
        """Pick the better reply: a column index (0 = the first shown), a label ("Model A")
        or a model id. Stored with the comparison; reveals the names in blind mode."""
        index = self._index(choice)
        if not self._run.done:
            raise RuntimeError("Wait for every reply to finish (.wait()) before voting.")
        self._on_vote(self._run, index)
        return self._run.results()[index]

    def to_markdown(self) -> str:
        """A table of the columns (model, time to first token, tokens/s, tokens), then the
        replies. Names stay hidden in blind mode until the vote."""
        s = self._run.schedule
        return export.to_markdown(
            self._run.prompt,
            self._run.results(),
            mode=s.mode if s else None,
            reason=s.reason if s else None,
            winner=self._run.vote,
        )

    def to_dict(self) -> dict[str, Any]:
        s = self._run.schedule
        return export.to_dict(
            self._run.prompt,
            self._run.results(),
            blind=self._run.blind,
            mode=s.mode if s else None,
            reason=s.reason if s else None,
            winner=self._run.vote,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def _index(self, choice: int | str) -> int:
        columns = self._run.columns
        if isinstance(choice, bool) or not isinstance(choice, int | str):
            raise TypeError("vote() takes a column index, a label like 'Model A' or a model id.")
        if isinstance(choice, int):
            if not 0 <= choice < len(columns):
                raise ValueError(f"Pick a column from 0 to {len(columns) - 1}, not {choice}.")
            return choice
        for c in columns:
            if choice.strip().lower() == c.label.lower():
                return c.index
            if choice == c.repo_id and self._run.revealed:
                return c.index
        hint = "a label like 'Model A'" if not self._run.revealed else "a model id or a label"
        raise ValueError(f"No column {choice!r} in this comparison: pick {hint}, or an index.")

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"CompareHandle({self.id!r}, {len(self._run.columns)} models, {state})"
