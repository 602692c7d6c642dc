"""Gather the memory facts the schedule needs, from the runtime (engine, policy, snapshot)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatwidget.catalog import ModelSpec
from chatwidget.compare.schedule import MemoryFacts
from chatwidget.engine import memory
from chatwidget.errors import ChatWidgetError

if TYPE_CHECKING:
    from chatwidget.runtime import Runtime

log = logging.getLogger("chatwidget.compare")


def required_bytes(runtime: Runtime, spec: ModelSpec, *, group: str | None) -> int | None:
    """What ``spec`` needs loaded (the fit estimate); asks the hub's headers first when the
    model is not downloaded (a few small Range requests). None when it cannot be known."""
    if spec.is_remote:
        return 0  # runs on its server: no memory here
    try:
        return runtime.engine.estimate_memory(spec)
    except ChatWidgetError:
        pass
    try:
        runtime.orchestrator.plan(spec, group=group)  # remembers the headers' facts
        return runtime.engine.estimate_memory(spec)
    except Exception as exc:  # unknown: the schedule then runs them one after another
        log.info("No memory estimate for %s: %s", spec.repo_id, exc)
        return None


def gather(runtime: Runtime, specs: Sequence[ModelSpec], *, group: str | None) -> MemoryFacts:
    """The estimates of ``specs``, the budget, the free memory and the model limit now."""
    snapshot = runtime.orchestrator.snapshot()
    held = 0  # memory these models hold already counts as room for them
    for spec in specs:
        status = snapshot.models.get(spec.repo_id)
        if status is not None and status.memory_bytes:
            held += status.memory_bytes
    cuda = memory.cuda_free_bytes()
    free = int((memory.free_ram_bytes() + sum(cuda.values())) * memory.PHYSICAL_HEADROOM_FRACTION)
    local = [s for s in specs if not s.is_remote]
    return MemoryFacts(
        required_bytes={s.repo_id: required_bytes(runtime, s, group=group) for s in specs},
        budget_bytes=runtime.engine.memory_budget_bytes,
        free_bytes=free + held,
        max_loaded_models=runtime.engine.max_loaded_models if local else None,
        device=f"cuda:{min(cuda)}" if cuda else "cpu",
    )
