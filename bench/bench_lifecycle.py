"""Model lifecycle (issue 11): memory during a cold swap, after an unload, and replies during a
download. Three ratios, each against a baseline measured in the same run:

1. ``cold_swap_peak_rss_over_larger_model_alone`` (goal <= 1.1): two bench-sized models
   (SmolLM2-135M's shape, fp32, about 540 MB each) with a memory budget of 1.6x one model's
   weights, enough for one model with its overhead, not two (raised to 1.02x the estimate
   when :mod:`chatwidget.fit` counts more than that for one model). Baseline: the peak
   resident memory while the first model loads and answers alone. Measured: the peak while a
   reply streams on it and the second model is selected, then loads (it must wait for the
   reply and evict the first) and answers. RSS is sampled every 10 ms.
2. ``rss_after_unload_over_before_first_load`` (goal <= 1.05): resident memory after
   ``unload`` of the model, against before it was first loaded. The process imported and
   warmed up transformers on a tiny model first, so the baseline holds the libraries' own
   memory, which no unload gives back.
3. ``ttft_during_download_over_idle`` (goal <= 1.2): time to first token on the bench model
   while a 200 MB model downloads through the widget's download process, against idle; the
   median over rounds of busy / idle within the round (both see the same machine load). The
   local hub runs in its own process at the lowest CPU priority (nice 19, ``SCHED_IDLE``),
   standing in for a server on another machine, and sends at ``--rate`` bytes/s (default
   20 MB/s, a fast home connection; each 200 MB download lasts about 10 s and is then
   deleted and started again, so every reply of the busy phase runs during one).

    .venv/bin/python bench/bench_lifecycle.py [--rounds 5] [--samples 3] [--rate 50000000]

Results go to ``bench/results/bench_lifecycle-<time>.json``.
"""

from __future__ import annotations

import os
import tempfile

# huggingface_hub reads these at import: keep the real HF home untouched and the output quiet.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench-hf-home-")
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)

import argparse
import gc
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from _common import fresh_dir, print_table, run_hub_process, work_dir, write_results

from chatwidget import fit, runtime
from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine, memory
from chatwidget.engine.loader import find_in_cache
from chatwidget.engine.types import GenerationSettings
from chatwidget.orchestrator import NoteChanged, Orchestrator
from chatwidget.testing.models import bench_model_path, build_model, build_weights_repo

BENCH_REPO = "bench/smollm2-135m-random"
REPO_A, REPO_B = "bench/lifecycle-a", "bench/lifecycle-b"
TINY = "bench/lifecycle-tiny"
BLOB = "bench/lifecycle-blob-200mb"
MESSAGES = [{"role": "user", "content": "Please explain how a download manager shows progress."}]
WAIT_S = 600.0


def hub_root() -> Path:
    """The bench model under two repo ids (hard links), a tiny model and a 200 MB blob."""
    source = bench_model_path() / BENCH_REPO
    root = work_dir() / "bench-lifecycle-hub"
    for repo_id in (REPO_A, REPO_B):
        target = root / repo_id
        if (target / ".complete").is_file():
            continue
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith("."):
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copy2(path, target / path.name)
        (target / ".complete").write_text("ok\n")
    if not (root / TINY / "config.json").is_file():
        build_model(root, TINY, "tiny", seed=0)
    if not (root / BLOB / ".complete").is_file():
        build_weights_repo(root, BLOB, 200_000_000, seed=0)
        (root / BLOB / ".complete").write_text("ok\n")
    return root


@contextmanager
def lowest_priority_hub(root: Path, rate: float | None) -> Iterator[str]:
    """The local hub in its own process at the lowest CPU priority (nice 19, ``SCHED_IDLE``):
    a stand-in for a server on another machine, which takes no CPU from this one."""
    before = {p.pid for p in psutil.Process().children()}
    with run_hub_process(root, rate=rate) as url:
        for child in psutil.Process().children():
            if child.pid not in before:
                child.nice(19)
                if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
                    os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
        yield url


class RssSampler:
    """Resident memory of this process every ``interval_s``, in a thread."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.samples.append(int(proc.memory_info().rss))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(int(psutil.Process().memory_info().rss))

    @property
    def peak(self) -> int:
        return max(self.samples)


def settled_rss() -> int:
    """RSS once garbage is collected (the engine already gave freed heap back on unload)."""
    gc.collect()
    return memory.process_rss_bytes()


def wait_ready(orch: Orchestrator, cid: str, repo_id: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while orch.active_model(cid) != repo_id or orch.state(repo_id).label != "Ready":
        if time.monotonic() > deadline:
            sys.exit(f"{repo_id} did not become Ready: {orch.snapshot().models.get(repo_id)}")
        orch.wait_until_idle(1.0)


def memory_phases(url: str, cache: Path) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    for repo_id in (REPO_A, REPO_B, TINY):
        snapshot_download(repo_id, cache_dir=cache, endpoint=url)
    probe = Engine(cache_dir=cache, memory_budget_bytes=1)
    weights = probe.estimate_memory(ModelSpec(REPO_A))  # what the budget counts for one model
    cached = find_in_cache(ModelSpec(REPO_A), cache)
    weight_bytes = (
        fit.estimate_files(REPO_A, cached.config_path, cached.weight_files)
        .for_spec(ModelSpec(REPO_A))
        .weights_bytes
    )
    # 1.6x one model's weights, as issue 11 sets it; but never below what the estimate counts
    # for one model (chatwidget.fit's counts the KV cache of the default context too), so one
    # model fits and two never do
    budget = max(int(1.6 * weight_bytes), int(1.02 * weights))
    print(
        f"  weights {weight_bytes / 2**20:,.0f} MiB, estimate {weights / 2**20:,.0f} MiB, "
        f"budget {budget / 2**20:,.0f} MiB ({budget / weight_bytes:.2f}x the weights)",
        flush=True,
    )
    rt = runtime.acquire(endpoint=url, cache_dir=cache, memory_budget=budget)
    orch = rt.orchestrator
    notes: list[str] = []
    orch.subscribe(lambda e: notes.append(e.note or "") if isinstance(e, NoteChanged) else None)
    short = GenerationSettings(max_new_tokens=8)
    try:
        # warm-up on a tiny model: imports and one-time allocations of the libraries
        orch.open_conversation("warm", group="warm", model=TINY)
        wait_ready(orch, "warm", TINY)
        orch.generate("warm", MESSAGES, short)
        orch.close_conversation("warm")
        orch.unload(TINY)
        before_first_load = settled_rss()

        orch.open_conversation("c1", group="g1")
        with RssSampler() as alone:
            orch.request_model("c1", REPO_A)
            wait_ready(orch, "c1", REPO_A)
            orch.generate("c1", MESSAGES, short)
        print(f"  A alone: peak {alone.peak / 2**20:,.0f} MiB", flush=True)

        first_token = threading.Event()
        reply: dict[str, Any] = {}

        def long_reply() -> None:
            reply["result"] = orch.generate(
                "c1",
                MESSAGES,
                GenerationSettings(max_new_tokens=48),
                on_text=lambda _t: first_token.set(),
            )

        with RssSampler() as swap:
            streaming = threading.Thread(target=long_reply)
            streaming.start()
            if not first_token.wait(WAIT_S):
                sys.exit("the reply on A did not start")
            orch.request_model("c1", REPO_B)  # a cold swap while the reply streams
            streaming.join()
            wait_ready(orch, "c1", REPO_B)
            orch.generate("c1", MESSAGES, short)
        waited = any(n.startswith("waiting for the reply") for n in notes)
        print(
            f"  cold swap A -> B with a reply streaming: peak {swap.peak / 2**20:,.0f} MiB "
            f"(B waited for the reply: {waited})",
            flush=True,
        )
        if not waited:
            sys.exit("B did not wait for the reply on A: the swap was not measured as meant")

        unloaded = orch.unload(REPO_B)
        after_unload = settled_rss()
        print(
            f"  before the first load {before_first_load / 2**20:,.0f} MiB, after unload "
            f"{after_unload / 2**20:,.0f} MiB (freed {unloaded.freed_bytes / 2**20:,.0f} MiB)",
            flush=True,
        )
    finally:
        runtime.release(rt)
    return {
        "weights_bytes": weight_bytes,
        "estimate_bytes": weights,
        "budget_bytes": budget,
        "peak_rss_alone": alone.peak,
        "peak_rss_swap": swap.peak,
        "rss_before_first_load": before_first_load,
        "rss_after_unload": after_unload,
        "samples_alone": len(alone.samples),
        "samples_swap": len(swap.samples),
    }


class Downloads:
    """Keeps a 200 MB download running (through the widget's download process) until stopped."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self.rt = rt
        self.bytes = 0
        self.active = threading.Event()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.completed = 0

    def _progress(self, progress: Any) -> None:
        self.bytes = progress.bytes_done
        if 0 < progress.bytes_done < progress.bytes_total:
            self.active.set()

    def _run(self) -> None:
        downloader = self.rt.downloader
        while not self._stop.is_set():
            try:
                downloader.download(BLOB, on_progress=self._progress, cancel=self._cancel)
                self.completed += 1
            except Exception as exc:  # canceled when stopped
                if not self._stop.is_set():
                    print("  download failed:", exc, flush=True)
            self.active.clear()
            downloader.delete(BLOB)  # so the next round downloads it again

    def start(self) -> None:
        self._thread.start()
        if not self.active.wait(WAIT_S):
            sys.exit("the download did not start")

    def running(self) -> bool:
        return self.active.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._cancel.set()
        self._thread.join(WAIT_S)


def during_downloads(rt: runtime.Runtime, ttft: Any, samples: int) -> list[float]:
    """``samples`` times to first token, each taken entirely while a download runs."""
    downloads = Downloads(rt)
    downloads.start()
    taken: list[float] = []
    while len(taken) < samples:
        if not downloads.running():
            downloads.active.wait(WAIT_S)
            continue
        value = ttft()
        if downloads.running():  # the whole reply ran during a download
            taken.append(value)
    downloads.stop()
    return taken


def ttft_phase(url: str, cache: Path, rounds: int, samples: int) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    snapshot_download(REPO_A, cache_dir=cache, endpoint=url)
    rt = runtime.acquire(endpoint=url, cache_dir=cache)
    orch = rt.orchestrator
    settings = GenerationSettings(max_new_tokens=2)

    def ttft() -> float:
        first: list[float] = []
        started = time.perf_counter()
        orch.generate(
            "c1",
            MESSAGES,
            settings,
            on_text=lambda _t: first.append(time.perf_counter()) if not first else None,
        )
        return first[0] - started

    try:
        orch.open_conversation("c1", group="g1", model=REPO_A)
        wait_ready(orch, "c1", REPO_A)
        for _ in range(3):
            ttft()  # warm-up
        idle: list[list[float]] = []
        busy: list[list[float]] = []
        for n in range(rounds):
            # idle first in even rounds, busy first in odd ones: neither always runs first
            if n % 2 == 0:
                idle.append([ttft() for _ in range(samples)])
            busy.append(during_downloads(rt, ttft, samples))
            if n % 2 == 1:
                idle.append([ttft() for _ in range(samples)])
            print(
                f"  round {n + 1}: idle {statistics.median(idle[-1]) * 1e3:.1f} ms, "
                f"during a download {statistics.median(busy[-1]) * 1e3:.1f} ms",
                flush=True,
            )
    finally:
        runtime.release(rt)
    ratios = [statistics.median(b) / statistics.median(i) for b, i in zip(busy, idle, strict=True)]
    return {"idle_s": idle, "busy_s": busy, "ratio_per_round": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=3, help="replies per phase and round")
    parser.add_argument("--rate", type=float, default=20_000_000, help="hub bytes/s (0: no limit)")
    args = parser.parse_args()

    root = hub_root()
    with lowest_priority_hub(root, None) as url, fresh_dir(prefix="bench-life-") as cache:
        print("memory: cold swap under a 1.6x budget, then unload...", flush=True)
        mem = memory_phases(url, cache)
    with lowest_priority_hub(root, args.rate) as url, fresh_dir(prefix="bench-life-") as cache:
        rate = f"{args.rate:,.0f} B/s" if args.rate else "full speed"
        print(f"time to first token while a 200 MB model downloads at {rate}...", flush=True)
        ttft = ttft_phase(url, cache, args.rounds, args.samples)

    ratios = {
        "cold_swap_peak_rss_over_larger_model_alone": mem["peak_rss_swap"] / mem["peak_rss_alone"],
        "rss_after_unload_over_before_first_load": mem["rss_after_unload"]
        / mem["rss_before_first_load"],
        "ttft_during_download_over_idle": statistics.median(ttft["ratio_per_round"]),
    }
    goals = {
        "cold_swap_peak_rss_over_larger_model_alone": 1.1,
        "rss_after_unload_over_before_first_load": 1.05,
        "ttft_during_download_over_idle": 1.2,
    }
    rows = [
        [name, value, f"<= {goals[name]}", "yes" if value <= goals[name] else "NO"]
        for name, value in ratios.items()
    ]
    print()
    print_table(["ratio", "value", "goal", "met"], rows)
    out = write_results(
        "bench_lifecycle",
        {
            "settings": vars(args),
            "ratios": ratios,
            "goals": {k: f"<= {g}" for k, g in goals.items()},
            "memory": mem,
            "ttft": ttft,
        },
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
