"""Measure whether models keep their speed side by side: solo vs concurrent tokens/s.

:func:`measure` runs each model alone, then all of them at once, on the same prompt and
settings (greedy, a fixed number of new tokens), ``rounds`` times, and returns per model the
median of (tokens/s together) / (tokens/s alone). With ``record=True`` the result goes into
:data:`~chatwidget.compare.schedule.PROBES`, where the schedule finds it: the next
comparison of these models runs them together only if every ratio is at least 0.9.
``bench/bench_compare.py`` uses it, and checks that the view's choice matches.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chatwidget.catalog import ModelSpec
from chatwidget.compare.schedule import PROBES
from chatwidget.engine.types import GenerationSettings
from chatwidget.session.messages import new_id

if TYPE_CHECKING:
    from chatwidget.runtime import Runtime

#: The prompt the probe generates from.
PROBE_PROMPT = "Write a short story about a lighthouse keeper."


def _wait_ready(runtime: Runtime, cid: str, repo_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while runtime.orchestrator.snapshot().conversations[cid].active_model != repo_id:
        status = runtime.orchestrator.snapshot().models.get(repo_id)
        if status is not None and status.state.value in ("Failed", "Canceled"):
            raise RuntimeError(f"{repo_id} could not be loaded: {status.error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{repo_id} was not Ready within {timeout} s.")
        runtime.orchestrator.wait_until_idle(0.2)


def tokens_per_s(runtime: Runtime, cid: str, settings: GenerationSettings, prompt: str) -> float:
    """One reply's tokens/s (decode speed, as the engine reports it)."""
    result = runtime.orchestrator.generate(cid, [{"role": "user", "content": prompt}], settings)
    return result.usage.tokens_per_s or 0.0


class Speeds:
    """Tokens/s of each model per round: alone, and with the others generating at once."""

    def __init__(self, models: Sequence[str]) -> None:
        self.solo: dict[str, list[float]] = {m: [] for m in models}
        self.together: dict[str, list[float]] = {m: [] for m in models}

    def ratios(self) -> dict[str, float]:
        """Per model, the median of the paired per-round ratios together / alone."""
        out = {}
        for model, solo in self.solo.items():
            paired = [t / s for s, t in zip(solo, self.together[model], strict=True) if s > 0]
            out[model] = statistics.median(paired) if paired else 0.0
        return out


def measure_speeds(
    runtime: Runtime,
    models: Sequence[ModelSpec | str],
    *,
    group: str = "compare-probe",
    settings: GenerationSettings | None = None,
    prompt: str = PROBE_PROMPT,
    rounds: int = 3,
    timeout: float = 600.0,
) -> Speeds:
    """Run each model alone, then all at once, ``rounds`` times (models loaded first)."""
    settings = settings or GenerationSettings(max_new_tokens=128, do_sample=False)
    specs = [ModelSpec.coerce(m) for m in models]
    orch = runtime.orchestrator
    cids = {s.repo_id: new_id("probe") for s in specs}
    speeds = Speeds(list(cids))
    for spec in specs:
        orch.open_conversation(cids[spec.repo_id], group=group)
        orch.request_model(cids[spec.repo_id], spec)
    try:
        for spec in specs:
            _wait_ready(runtime, cids[spec.repo_id], spec.repo_id, timeout)
        for _ in range(rounds):
            for repo_id, cid in cids.items():
                speeds.solo[repo_id].append(tokens_per_s(runtime, cid, settings, prompt))
            together: dict[str, float] = {}

            def run(repo_id: str, cid: str, out: dict[str, float] = together) -> None:
                out[repo_id] = tokens_per_s(runtime, cid, settings, prompt)

            threads = [threading.Thread(target=run, args=item) for item in cids.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for repo_id in cids:
                speeds.together[repo_id].append(together.get(repo_id, 0.0))
    finally:
        for cid in cids.values():
            orch.close_conversation(cid)
    return speeds


def measure(
    runtime: Runtime,
    models: Sequence[ModelSpec | str],
    *,
    record: bool = True,
    **options: Any,
) -> dict[str, float]:
    """Per model, median concurrent tokens/s over solo tokens/s (see the module doc);
    ``options`` go to :func:`measure_speeds`."""
    result = measure_speeds(runtime, models, **options).ratios()
    if record:
        PROBES.record(result)
    return result
