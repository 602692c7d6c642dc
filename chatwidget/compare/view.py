"""Compare mode in the widget: the ``compare_state`` trait, its streamed text, its intents.

One thread writes the trait: a :class:`~chatwidget.widget.sync.Publisher` of its own,
started with the first comparison. Per token only the comparison's
:class:`~chatwidget.session.deltas.DeltaStream` is touched (a list append); the publisher
sends the text collected since its last round as small ``compare_delta`` messages (at most
every 50 ms) and rewrites the trait only when a column's state changes, at most 10 times a
second. A column's row carries its text so far and how many chunks that holds (``chunks``),
like a chat message row, so a view that opens mid-reply goes on from there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from chatwidget.compare.comparer import Comparer, check_models
from chatwidget.compare.handle import CompareHandle
from chatwidget.compare.run import CompareRun
from chatwidget.errors import ProtocolError
from chatwidget.widget.protocol import CompareColumnRow, CompareState, Reply
from chatwidget.widget.sync import Publisher

if TYPE_CHECKING:
    from chatwidget.runtime import Runtime
    from chatwidget.session import Session

#: Trait writes per second at most while a comparison streams.
TRAIT_INTERVAL_S = 0.1
#: Streamed text goes out at most this often.
DELTA_INTERVAL_S = 0.05


def render(run: CompareRun | None) -> CompareState | None:
    """The trait value for the current comparison (None: none yet)."""
    if run is None:
        return None
    with run.lock:
        columns: list[CompareColumnRow] = []
        for c in run.columns:
            stream = None if c.finished else run.deltas.snapshot(c.message_id)
            text, chunks = stream if stream is not None else (c.text, 0)
            u = c.usage
            columns.append(
                {
                    "index": c.index,
                    "label": c.label,
                    "model": c.repo_id if run.revealed else None,
                    "state": c.state,  # type: ignore[typeddict-item]
                    "note": c.note,
                    "status": c.status,
                    "text": text,
                    "chunks": chunks,
                    "time_to_first_token_s": None if u is None else u.time_to_first_token_s,
                    "tokens_per_s": None
                    if u is None or u.tokens_per_s is None
                    else round(u.tokens_per_s, 2),
                    "new_tokens": None if u is None else u.new_tokens,
                    "error": c.error,
                }
            )
        s = run.schedule
        return {
            "id": run.id,
            "version": run.version,
            "prompt": run.prompt,
            "blind": run.blind,
            "mode": None if s is None else s.mode,
            "reason": None if s is None else s.reason,
            "done": run.done,
            "vote": run.vote,
            "saved": run.comparison_id is not None,
            "columns": columns,
        }


class CompareMode:
    """A widget's compare mode: the comparer, and the thread that publishes it."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        group: str,
        session: Session,
        apply: Callable[[dict[str, Any]], None],
        send: Callable[[dict[str, Any]], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._dirty = threading.Event()
        self._publisher: Publisher | None = None
        self._send = send
        self.comparer = Comparer(
            runtime,
            group=group,
            settings=lambda: session.settings,
            history=lambda: getattr(session, "history", None),
            on_change=self._changed,
            on_text=self._poke,
            on_queued=session.track_download,
        )
        self._publisher = Publisher(
            take_changes=self._take_changes,
            render=self._render,
            apply=lambda values: apply({k: v for k, v in values.items() if k != "seq"}),
            take_deltas=self.comparer.deltas.take,
            send=self._send_delta,
            trait_interval=TRAIT_INTERVAL_S,
            delta_interval=DELTA_INTERVAL_S,
            on_error=on_error,
            name="chatwidget-compare-publisher",
        )

    def compare(self, prompt: str, models: Any, *, blind: bool = False) -> CompareHandle:
        return self.comparer.compare(prompt, models, blind=blind)

    def flush(self, timeout: float = 5.0) -> bool:
        return self._publisher is not None and self._publisher.flush(timeout)

    def close(self) -> None:
        self.comparer.close()
        if self._publisher is not None:
            self._publisher.close()

    # ------------------------------------------------------------------ intents

    def intent(self, kind: str, args: dict[str, Any], reply: Reply) -> None:
        """Act on a front-end compare intent (``compare``, ``compare_vote``, ``compare_stop``,
        ``compare_sync``, ``compare_export``); the reply carries the state (``compare``)."""
        try:
            self._act(kind, args, reply)
        finally:  # every compare reply carries the state as it is now
            reply["compare"] = render(self.comparer.current)

    def _act(self, kind: str, args: dict[str, Any], reply: Reply) -> None:
        match kind:
            case "compare":
                specs = check_models(args["models"])
                self.comparer.compare(args["prompt"], specs, blind=args["blind"])
            case "compare_vote":
                handle = self._handle()
                handle.vote(args["column"])
            case "compare_stop":
                self.comparer.stop()
            case "compare_export":
                reply["export"] = self.export(args["format"])
            case "compare_sync":
                pass
            case _:  # pragma: no cover - validate() rejects unknown kinds
                raise ProtocolError(f"Unknown compare message {kind!r}.")

    def export(self, fmt: str) -> str:
        """The current comparison as ``"markdown"`` or ``"json"`` text."""
        handle = self._handle()
        if fmt == "markdown":
            return handle.to_markdown()
        if fmt == "json":
            return handle.to_json()
        raise ValueError(f"Export as 'markdown' or 'json', not {fmt[:20]!r}.")

    def _handle(self) -> CompareHandle:
        handle = self.comparer.handle()
        if handle is None:
            raise ValueError("There is no comparison yet: start one first.")
        return handle

    # ------------------------------------------------------------------ publishing

    def _changed(self) -> None:
        self._dirty.set()
        self._poke()

    def _poke(self) -> None:
        publisher = self._publisher
        if publisher is not None and publisher.alive:
            publisher.poke()

    def _take_changes(self) -> Collection[str]:
        if not self._dirty.is_set():
            return ()
        self._dirty.clear()
        return ("compare",)

    def _render(self, _changes: Collection[str]) -> dict[str, Any]:
        return {"compare_state": render(self.comparer.current)}

    def _send_delta(self, message: dict[str, Any]) -> None:
        run = self.comparer.current
        if run is None:
            return
        column = next((c.index for c in run.columns if c.message_id == message["message_id"]), None)
        if column is None or message["conversation_id"] != run.id:
            return
        self._send(
            {
                "kind": "compare_delta",
                "compare_id": run.id,
                "column": column,
                "index": message["index"],
                "text": message["text"],
            }
        )
