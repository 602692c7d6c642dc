"""Decide how a comparison runs: together, or one model after another, and say why.

The rule, in order:

1. **Memory policy.** The models must all fit at once: their summed estimates
   (:mod:`chatwidget.fit`, through the engine's ``estimate_memory``) within the memory
   budget and the free memory, and no more of them than ``max_loaded_models``. Otherwise
   they run one after another, in the order shown.
2. **Speed.** They run together only where a measurement (:mod:`chatwidget.compare.probe`)
   showed each model keeps at least :data:`CONCURRENCY_FLOOR` of its solo tokens/s while the
   others generate. Without a measurement for these models: one after another. On a CPU the
   models share the same cores, so each would slow down (``bench/bench_compare.py``
   measures about 0.5x on this project's 2-core machine); a GPU pair is worth a probe.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chatwidget.compare.types import CONCURRENCY_FLOOR, Schedule
from chatwidget.format import format_bytes


@dataclass(frozen=True)
class MemoryFacts:
    """What the memory rule needs, gathered by the caller (plain data, easy to test)."""

    required_bytes: Mapping[str, int | None]  # per model; None when nothing is known yet
    budget_bytes: int | None  # the engine's budget (None: no budget)
    free_bytes: int  # free memory now, plus what these models already hold loaded
    max_loaded_models: int | None
    device: str  # "cpu" or "cuda:0": where the models would run


class ProbeBook:
    """Measured ratios (concurrent tokens/s over solo tokens/s, per model) by model set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ratios: dict[frozenset[str], dict[str, float]] = {}

    def record(self, ratios: Mapping[str, float]) -> None:
        with self._lock:
            self._ratios[frozenset(ratios)] = dict(ratios)

    def forget(self, models: Sequence[str]) -> None:
        with self._lock:
            self._ratios.pop(frozenset(models), None)

    def lookup(self, models: Sequence[str]) -> dict[str, float] | None:
        with self._lock:
            found = self._ratios.get(frozenset(models))
            return None if found is None else dict(found)


#: Measurements of this process (the bench and :func:`probe.measure` record here).
PROBES = ProbeBook()


def decide(
    models: Sequence[str], memory: MemoryFacts, measured: Mapping[str, float] | None
) -> Schedule:
    """How ``models`` run, from the memory facts and a measurement (if any)."""
    n = len(models)
    if memory.max_loaded_models is not None and memory.max_loaded_models < n:
        return Schedule(
            "sequential",
            f"At most {memory.max_loaded_models} model(s) may stay loaded "
            f"(max_loaded_models): they run one after another, in the order shown.",
            fits_together=False,
        )
    sizes = [memory.required_bytes.get(m) for m in models]
    if any(size is None for size in sizes):
        return Schedule(
            "sequential",
            "The memory these models need is not known yet: they run one after another, "
            "in the order shown.",
            fits_together=False,
        )
    total = sum(size or 0 for size in sizes)
    limit = memory.free_bytes
    what = "free memory"
    if memory.budget_bytes is not None and memory.budget_bytes < limit:
        limit, what = memory.budget_bytes, "the memory budget"
    if total > limit:
        return Schedule(
            "sequential",
            f"Together they need {format_bytes(total)}, more than {what} "
            f"({format_bytes(limit)}): they run one after another, in the order shown.",
            fits_together=False,
        )
    if measured is not None and all(m in measured for m in models):
        slowest = min(measured[m] for m in models)
        if slowest >= CONCURRENCY_FLOOR:
            return Schedule(
                "concurrent",
                f"They fit together, and measured side by side each keeps at least "
                f"{slowest:.2f}x its solo speed: they run at the same time.",
                fits_together=True,
            )
        return Schedule(
            "sequential",
            f"They fit together, but measured side by side one ran at {slowest:.2f}x its "
            f"solo speed (below {CONCURRENCY_FLOOR}x): they run one after another.",
            fits_together=True,
        )
    if memory.device == "cpu":
        reason = (
            "They fit together, but on the CPU they would share the same cores and each "
            f"would slow below {CONCURRENCY_FLOOR}x its solo speed: they run one after "
            "another, in the order shown."
        )
    else:
        reason = (
            f"They fit together on {memory.device}, but running them at once has not been "
            f"measured to keep {CONCURRENCY_FLOOR}x their solo speed: they run one after "
            "another, in the order shown."
        )
    return Schedule("sequential", reason, fits_together=True)
