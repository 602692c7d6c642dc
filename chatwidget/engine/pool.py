"""The warm pool: loaded models in least-recently-used order, within a memory budget.

The pool is plain bookkeeping with no locking; :class:`chatwidget.engine.Engine`
guards it with its state lock.

Every loaded model counts against the budget until its memory is really gone. A model that
is unloaded while a reply still holds it is *retired*: it is no longer in the pool (nothing
new can start on it), but its bytes stay accounted until that reply ends. So a cold swap
never plans with memory that a reply still uses.

Eviction rule, for a new model of ``required`` bytes:

- models in ``keep`` are never evicted: if the new model cannot fit beside them, it is
  refused;
- models in ``busy`` (a reply is using them, or is about to) and retired models are never
  evicted either, but the new model may *wait* for them: if it would fit once they are free,
  the plan says what it waits for;
- the other models go least recently used first, those not in ``prefer`` before those in
  it, until the new model fits the budget, the physically free memory and the model count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

from chatwidget.engine.loader import LoadedModel


@dataclass(frozen=True)
class EvictionPlan:
    """Whether a model of ``required`` bytes fits, and which models must go first.

    ``waiting_for`` is set when it does not fit now but will once the replies on those
    models end; ``limit`` says what refused it otherwise ("memory" or "count").
    """

    fits: bool
    evict: tuple[str, ...]  # in eviction order
    available_bytes: int  # the most the new model could get with every evictable model gone
    waiting_for: tuple[str, ...] = ()
    limit: str = ""


class WarmPool:
    """Loaded models, most recently used last, plus retired models still held by a reply."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, LoadedModel] = OrderedDict()
        self._retired: list[LoadedModel] = []

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
        """Take a model out; if a reply still uses it, it stays accounted as retired."""
        entry = self._entries.pop(repo_id, None)
        if entry is not None and entry.users > 0:
            self._retired.append(entry)
        return entry

    def release(self, entry: LoadedModel) -> bool:
        """A reply on ``entry`` ended; True when that freed a retired model for good."""
        entry.users = max(0, entry.users - 1)
        if entry.users == 0 and any(r is entry for r in self._retired):
            self._retired = [r for r in self._retired if r is not entry]
            return True
        return False

    def drain(self) -> list[LoadedModel]:
        """Take every model out (retired ones stay accounted until their replies end)."""
        entries = list(self._entries.values())
        for repo_id in list(self._entries):
            self.remove(repo_id)
        return entries

    def repo_ids(self) -> list[str]:
        """Loaded models, least recently used first."""
        return list(self._entries)

    def retired_ids(self) -> list[str]:
        """Models unloaded while a reply still holds them."""
        return [entry.repo_id for entry in self._retired]

    def busy_ids(self) -> list[str]:
        """Loaded models a reply is using now."""
        return [rid for rid, entry in self._entries.items() if entry.users > 0]

    def most_recent(self) -> str | None:
        return next(reversed(self._entries), None)

    def used_bytes(self, among: Collection[str] | None = None) -> int:
        """Accounted memory of all models (retired included), or of the loaded ones in ``among``."""
        if among is not None:
            return sum(e.memory_bytes for rid, e in self._entries.items() if rid in among)
        return sum(e.memory_bytes for e in self._entries.values()) + self.retired_bytes()

    def retired_bytes(self) -> int:
        return sum(entry.memory_bytes for entry in self._retired)

    def resident_count(self) -> int:
        """Models in memory: loaded plus retired."""
        return len(self._entries) + len(self._retired)

    def plan(
        self,
        required: int,
        *,
        budget: int,
        physical_free: int,
        keep: Collection[str] = (),
        busy: Collection[str] = (),
        prefer: Collection[str] = (),
        max_models: int | None = None,
    ) -> EvictionPlan:
        """Decide which models must go for ``required`` bytes (see the module docstring)."""
        entries = self._entries
        kept = [rid for rid in entries if rid in keep]
        pinned = [rid for rid in entries if rid not in keep and (rid in busy or entries[rid].users)]
        candidates = [rid for rid in entries if rid not in keep and rid not in pinned]
        # least recently used first, models nobody prefers before the preferred ones
        evictable = [r for r in candidates if r not in prefer]
        evictable += [r for r in candidates if r in prefer]
        retired = self.retired_bytes()
        fixed = self.used_bytes(kept) + self.used_bytes(pinned) + retired
        evictable_bytes = self.used_bytes(evictable)
        available = min(budget - fixed, physical_free + evictable_bytes)
        fixed_count = len(kept) + len(pinned) + len(self._retired)
        count_ok = max_models is None or fixed_count + 1 <= max_models
        if required <= available and count_ok:
            used, count = self.used_bytes(), self.resident_count()
            freed, evict = 0, list[str]()
            for rid in evictable:
                memory_ok = used - freed + required <= budget and required <= physical_free + freed
                room_ok = max_models is None or count - len(evict) + 1 <= max_models
                if memory_ok and room_ok:
                    break
                evict.append(rid)
                freed += entries[rid].memory_bytes
            return EvictionPlan(fits=True, evict=tuple(evict), available_bytes=max(0, available))
        # Would it fit once the replies in flight end?
        waiting = (*pinned, *self.retired_ids())
        later = min(
            budget - self.used_bytes(kept),
            physical_free + evictable_bytes + self.used_bytes(pinned) + retired,
        )
        later_count_ok = max_models is None or len(kept) + 1 <= max_models
        if waiting and required <= later and later_count_ok:
            return EvictionPlan(
                fits=False, evict=(), available_bytes=max(0, available), waiting_for=waiting
            )
        limit = "count" if required <= available and not count_ok else "memory"
        return EvictionPlan(fits=False, evict=(), available_bytes=max(0, available), limit=limit)
