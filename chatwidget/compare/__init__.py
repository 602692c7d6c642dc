"""Compare mode: one prompt, 2-3 models, the replies side by side.

``chat.compare(prompt, models=[...], blind=False)`` returns a
:class:`~chatwidget.compare.handle.CompareHandle`; ``.wait()`` gives one
:class:`~chatwidget.compare.types.CompareResult` per model (text, usage with time to first
token, tokens/s and token count, model), ``.to_markdown()`` a table, ``.vote(...)`` picks
the better reply (blind mode hides the names until then).

- :mod:`~chatwidget.compare.run`: one comparison in flight (hidden conversations, the
  normal queue and lifecycle, replies streamed through a delta stream);
- :mod:`~chatwidget.compare.schedule`: together or one after another, and why (memory
  policy first, then a measured speed rule);
- :mod:`~chatwidget.compare.probe`: measures solo vs side-by-side tokens/s;
- :mod:`~chatwidget.compare.comparer`: a session's comparisons, saved in the conversation
  store with their votes;
- :mod:`~chatwidget.compare.export`: Markdown and JSON;
- :mod:`~chatwidget.compare.view`: the widget's ``compare`` trait and its deltas.
"""

from chatwidget.compare.comparer import Comparer
from chatwidget.compare.export import comparison_json, comparison_markdown
from chatwidget.compare.handle import CompareHandle
from chatwidget.compare.schedule import PROBES, MemoryFacts, ProbeBook, decide
from chatwidget.compare.types import CONCURRENCY_FLOOR, CompareResult, Schedule

__all__ = [
    "CONCURRENCY_FLOOR",
    "PROBES",
    "CompareHandle",
    "CompareResult",
    "Comparer",
    "MemoryFacts",
    "ProbeBook",
    "Schedule",
    "comparison_json",
    "comparison_markdown",
    "decide",
]
