"""The warm pool: loaded models in least-recently-used order, within a memory budget.

The pool is plain bookkeeping with no locking; :class:`chatwidget.engine.Engine`
guards it with its state lock.

Eviction rule: models named in ``keep`` are never evicted. To make room for a new
model, the least recently used other models go first, one by one, until the new
model fits both the budget and the physically free memory. If it cannot fit even
with every evictable model gone, nothing is evicted and the caller refuses the load.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

from chatwidget.engine.loader import LoadedModel


@dataclass(frozen=True)
class EvictionPlan:
    """Whether a model of ``required`` bytes fits, and which models must go first."""

    fits: bool
    evict: tuple[str, ...]  # least recently used first
    available_bytes: int  # the most the new model could get with every evictable model gone


class WarmPool:
    """Loaded models, most recently used last."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, LoadedModel] = OrderedDict()

    def __contains__(self, repo_id: object) -> bool:
        return repo_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, repo_id: str) -> LoadedModel | None:
        return self._entries.get(repo_id)

    def add(self, entry: LoadedModel) -> None:
        """Add (or replace) a model as the most recently used."""
        self._entries[entry.repo_id] = entry
        self._entries.move_to_end(entry.repo_id)

    def touch(self, repo_id: str) -> None:
        """Mark a model as the most recently used."""
        if repo_id in self._entries:
            self._entries.move_to_end(repo_id)

    def remove(self, repo_id: str) -> LoadedModel | None:
        return self._entries.pop(repo_id, None)

    def repo_ids(self) -> list[str]:
        """Loaded models, least recently used first."""
        return list(self._entries)

    def most_recent(self) -> str | None:
        return next(reversed(self._entries), None)

    def used_bytes(self, among: Collection[str] | None = None) -> int:
        """Accounted memory of all models, or of those in ``among``."""
        return sum(
            e.memory_bytes for rid, e in self._entries.items() if among is None or rid in among
        )

    def plan(
        self, required: int, *, budget: int, physical_free: int, keep: Collection[str]
    ) -> EvictionPlan:
        """Decide which least-recently-used models (outside ``keep``) must go for ``required``."""
        kept = [rid for rid in self._entries if rid in keep]
        evictable = [rid for rid in self._entries if rid not in keep]  # LRU first
        evictable_bytes = sum(self._entries[rid].memory_bytes for rid in evictable)
        available = min(budget - self.used_bytes(kept), physical_free + evictable_bytes)
        if required > available:
            return EvictionPlan(fits=False, evict=(), available_bytes=max(0, available))
        used = self.used_bytes()
        freed = 0
        evict: list[str] = []
        for rid in evictable:
            if used - freed + required <= budget and required <= physical_free + freed:
                break
            evict.append(rid)
            freed += self._entries[rid].memory_bytes
        return EvictionPlan(fits=True, evict=tuple(evict), available_bytes=max(0, available))
