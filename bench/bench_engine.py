"""The engine against plain transformers on the "bench" model (SmolLM2-135M's shape, fp32).

Three ratios, each measured side by side in one run:

1. load: ``Engine.load`` against plain ``AutoTokenizer`` + ``AutoModelForCausalLM``
   ``from_pretrained`` from the same cache with the same arguments (goal: <= 1.05);
2. tokens/s: ``Engine.generate`` (chat template, streamer thread, stop criteria) against a
   plain greedy ``model.generate`` on the same model object and prompt, also run in a worker
   thread as the engine does (goal: >= 0.97). On a crowded CPU a ``generate`` in the main
   thread can be several times slower than in a worker thread (OpenMP's two-thread team
   spinning against other processes), which would flatter the engine; that main-thread
   figure is printed once for information, not used in the ratio;
3. memory: resident memory after 20 alternating switches between two bench-sized models
   (each switch is a cold swap that evicts the other, then a short reply) against after the
   first switch (goal: <= 1.05).

Both methods take turns running first in each round. A ratio is the median over rounds of
engine / plain within the round: on a shared machine the two runs of a round see the same
load, while load swings between rounds are larger than the differences measured.

    .venv/bin/python bench/bench_engine.py [--rounds 7] [--token-rounds 6] [--tokens 32]
                                           [--switches 20]

The bench model is built once (``chatwidget.testing.models.bench_model_path``) and fetched
through the local hub into a fresh HF cache. Results go to ``bench/results/``.
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
import time
from pathlib import Path
from typing import Any

from _common import (
    fresh_dir,
    in_worker_thread,
    print_table,
    rotating,
    run_hub_process,
    work_dir,
    write_results,
)

from chatwidget.catalog import ModelSpec
from chatwidget.engine import Engine
from chatwidget.engine.memory import process_rss_bytes
from chatwidget.engine.types import GenerationSettings
from chatwidget.testing.models import bench_model_path

BENCH_REPO = "bench/smollm2-135m-random"
REPO_A = "bench/engine-a"
REPO_B = "bench/engine-b"
MESSAGES = [{"role": "user", "content": "Please explain how a download manager shows progress."}]


def hub_root_with_two_repos() -> Path:
    """A hub root serving the bench model under two repo ids (hard links: no extra disk)."""
    source = bench_model_path() / BENCH_REPO
    root = work_dir() / "bench-engine-hub"
    for repo_id in (REPO_A, REPO_B):
        target = root / repo_id
        marker = target / ".complete"
        if marker.is_file():
            continue
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith("."):
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copy2(path, target / path.name)
        marker.write_text("ok\n")
    return root


def fetch(cache: Path) -> None:
    from huggingface_hub import snapshot_download

    with run_hub_process(hub_root_with_two_repos()) as url:
        for repo_id in (REPO_A, REPO_B):
            snapshot_download(repo_id, cache_dir=cache, endpoint=url)


def plain_load(cache: Path, repo_id: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common: dict[str, Any] = {"cache_dir": cache, "local_files_only": True}
    tok = AutoTokenizer.from_pretrained(repo_id, **common)
    model = AutoModelForCausalLM.from_pretrained(
        repo_id, device_map="auto", dtype="auto", use_safetensors=True, **common
    )
    return model, tok


def bench_load(engine: Engine, cache: Path, rounds: int) -> dict[str, list[float]]:
    spec = ModelSpec(REPO_A)
    times: dict[str, list[float]] = {"plain": [], "engine": []}
    # warm-up, untimed: page cache and lazy imports
    plain_load(cache, REPO_A)
    gc.collect()
    engine.load(spec)
    engine.unload(REPO_A)
    for n in range(rounds):
        for method in rotating(["plain", "engine"], n):
            if method == "plain":
                started = time.perf_counter()
                loaded = plain_load(cache, REPO_A)
                times["plain"].append(time.perf_counter() - started)
                del loaded
                gc.collect()
            else:
                started = time.perf_counter()
                engine.load(spec)
                times["engine"].append(time.perf_counter() - started)
                engine.unload(REPO_A)
    return times


def bench_tokens(engine: Engine, rounds: int, tokens: int) -> dict[str, list[float]]:
    import torch

    engine.load(ModelSpec(REPO_A))
    model, tok = engine.model_and_tokenizer(REPO_A)
    enc = tok.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    prompt = enc["input_ids"].shape[-1]
    settings = GenerationSettings(max_new_tokens=tokens, do_sample=False)
    rates: dict[str, list[float]] = {"plain": [], "engine": [], "plain_main_thread": []}
    reference: list[int] | None = None

    def plain_generate() -> Any:
        with torch.inference_mode():
            return model.generate(**enc, do_sample=False, max_new_tokens=tokens)

    started = time.perf_counter()  # for information only: the main thread, once
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=tokens // 4)
    rates["plain_main_thread"].append((out.shape[-1] - prompt) / (time.perf_counter() - started))
    for n in range(rounds):
        for method in rotating(["plain", "engine"], n):
            if method == "plain":
                started = time.perf_counter()
                out = in_worker_thread(plain_generate)
                elapsed = time.perf_counter() - started
                ids = [int(t) for t in out[0, prompt:]]
            else:
                started = time.perf_counter()
                result = engine.generate(REPO_A, MESSAGES, settings, on_text=lambda _: None)
                elapsed = time.perf_counter() - started
                ids = list(result.token_ids)
            if reference is None:
                reference = ids
            if ids != reference:
                raise SystemExit(f"{method} produced different tokens: the comparison is unfair")
            rates[method].append(len(ids) / elapsed)
    return rates  # the caller unloads the model once this frame is gone


def bench_switches(engine: Engine, switches: int) -> list[int]:
    """RSS after each switch; every switch loads the other model (a cold swap) and replies."""
    settings = GenerationSettings(max_new_tokens=8, do_sample=False)
    engine.load(ModelSpec(REPO_A))
    rss: list[int] = []
    for n in range(switches):
        repo_id = REPO_B if n % 2 == 0 else REPO_A
        report = engine.load(ModelSpec(repo_id))
        if not report.cold_swap:
            raise SystemExit("the budget must hold one bench model: each switch a cold swap")
        engine.generate(repo_id, MESSAGES, settings, on_text=lambda _: None)
        rss.append(process_rss_bytes())
        print(f"  switch {n + 1:2d} -> {repo_id}: rss {rss[-1] / 2**20:,.0f} MiB", flush=True)
    return rss


def paired_median(engine: list[float], plain: list[float]) -> float:
    """Median over rounds of engine / plain: both ran back to back under the same load."""
    return statistics.median(e / p for e, p in zip(engine, plain, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--token-rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--switches", type=int, default=20)
    args = parser.parse_args()

    with fresh_dir(prefix="bench-engine-cache-") as cache:
        print("fetching the bench model through the local hub...", flush=True)
        fetch(cache)
        probe = Engine(cache_dir=cache, memory_budget_bytes=1 << 40)
        one_model = probe.estimate_memory(ModelSpec(REPO_A))
        # room for one bench model, not two: every switch evicts the other model
        engine = Engine(cache_dir=cache, memory_budget_bytes=int(one_model * 1.5))
        print("load: engine vs plain from_pretrained...", flush=True)
        load = bench_load(engine, cache, args.rounds)
        print("tokens/s: engine vs plain model.generate...", flush=True)
        rates = bench_tokens(engine, args.token_rounds, args.tokens)
        engine.unload(REPO_A)
        print(f"memory: {args.switches} alternating switches...", flush=True)
        rss = bench_switches(engine, args.switches)
        engine.close()

    med = {k: statistics.median(v) for k, v in load.items()}
    rate = {k: statistics.median(v) for k, v in rates.items()}
    ratios = {
        "load_time_engine_over_plain": paired_median(load["engine"], load["plain"]),
        "tokens_per_s_engine_over_plain": paired_median(rates["engine"], rates["plain"]),
        "rss_after_last_switch_over_first": rss[-1] / rss[0],
    }
    goals = {
        "load_time_engine_over_plain": ("<=", 1.05),
        "tokens_per_s_engine_over_plain": (">=", 0.97),
        "rss_after_last_switch_over_first": ("<=", 1.05),
    }
    rows = []
    for name, value in ratios.items():
        op, goal = goals[name]
        met = value <= goal if op == "<=" else value >= goal
        rows.append([name, value, f"{op} {goal}", "yes" if met else "NO"])
    print()
    print_table(["ratio", "value", "goal", "met"], rows)
    print(
        f"\nload median: engine {med['engine']:.3f}s, plain {med['plain']:.3f}s; "
        f"tokens/s median: engine {rate['engine']:.2f}, plain {rate['plain']:.2f} "
        f"(plain in the main thread, once: {rate['plain_main_thread']:.2f}); "
        f"rss: first switch {rss[0] / 2**20:,.0f} MiB, last {rss[-1] / 2**20:,.0f} MiB"
    )
    out = write_results(
        "bench_engine",
        {
            "model": BENCH_REPO,
            "settings": vars(args),
            "ratios": ratios,
            "goals": {k: f"{op} {g}" for k, (op, g) in goals.items()},
            "load_s": load,
            "tokens_per_s": rates,
            "rss_bytes_after_each_switch": rss,
        },
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
