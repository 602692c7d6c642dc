"""Fit estimate accuracy: chatwidget.fit's estimate against the memory a model really takes.

For each model (tiny, small, bench: SmolLM2-135M's dimensions) and dtype (bf16, fp32), a fresh
interpreter imports and warms torch, takes its resident set size as the baseline, loads the
model with the real Engine on CPU and generates one 512-token reply
(``chatwidget.testing.memory_probe``). The ratio is the estimate for that context (the
once-per-process runtime included) over the measured RSS increase; the goal is 0.85-1.15.

Two more rows check the parts the estimate is built from:

- the runtime: the tiny model's measured cost minus its own estimate, over ``RUNTIME_BYTES``
  (the once-per-process transformers stack; it should stay near 1 while versions do not move);
- a second model in the same process (tiny first, then the bench model in bf16): its measured
  cost over its estimate without the runtime, which it must not pay again.

    .venv/bin/python bench/bench_fit.py [--rounds 1] [--sizes tiny small bench]
                                        [--dtypes bfloat16 float32] [--new-tokens 512]

Memory figures do not depend on the machine's load (only timings do). Results go to
``bench/results/``.
"""

from __future__ import annotations

import os
import tempfile

# huggingface_hub reads these at import: keep the real HF home untouched and the output quiet.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench-hf-home-")
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.pop("HF_TOKEN", None)

import argparse
import shutil
import statistics
from pathlib import Path
from typing import Any

from _common import fresh_dir, print_table, run_hub_process, work_dir, write_results

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.engine.loader import find_in_cache
from chatwidget.fit.estimator import RUNTIME_BYTES
from chatwidget.testing import memory_probe
from chatwidget.testing.models import bench_model_path, build_model

REPOS = {"tiny": "bench/fit-tiny", "small": "bench/fit-small", "bench": "bench/smollm2-135m-random"}
MiB = 2**20


def hub_root() -> Path:
    """A hub root with the tiny and small models (built once) and the bench model (linked)."""
    root = work_dir() / "bench-fit-hub"
    for size in ("tiny", "small"):
        folder = root / REPOS[size]
        if not (folder / ".complete").is_file():
            build_model(root, REPOS[size], size, seed=0)  # type: ignore[arg-type]
            (folder / ".complete").write_text("ok\n")
    source = bench_model_path() / REPOS["bench"]
    target = root / REPOS["bench"]
    if not (target / ".complete").is_file():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith("."):
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copy2(path, target / path.name)
        (target / ".complete").write_text("ok\n")
    return root


def estimate_for(cache: Path, repo_id: str, dtype: str, context: int) -> fit.OptionEstimate:
    cached = find_in_cache(ModelSpec(repo_id, dtype=dtype), cache)
    model = fit.estimate_files(
        repo_id, cached.config_path, cached.weight_files, context_tokens=context
    )
    return model.option(dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="probe runs per case (median)")
    parser.add_argument("--sizes", nargs="*", default=list(REPOS), choices=list(REPOS))
    parser.add_argument("--dtypes", nargs="*", default=["bfloat16", "float32"])
    parser.add_argument("--new-tokens", type=int, default=512)
    args = parser.parse_args()

    from huggingface_hub import snapshot_download

    rows: list[list[object]] = []
    ratios: dict[str, float] = {}
    cases: list[dict[str, Any]] = []
    with fresh_dir(prefix="bench-fit-cache-") as cache:
        with run_hub_process(hub_root()) as url:
            for size in args.sizes:
                snapshot_download(REPOS[size], cache_dir=cache, endpoint=url)
        for size in args.sizes:
            for dtype in args.dtypes:
                repo_id = REPOS[size]
                steps = [
                    memory_probe.measure(
                        cache, [(repo_id, dtype)], new_tokens=args.new_tokens
                    ).steps[0]
                    for _ in range(args.rounds)
                ]
                measured = int(statistics.median(s.total_bytes for s in steps))
                context = steps[0].context_tokens
                option = estimate_for(cache, repo_id, dtype, context)
                estimated = option.required_bytes(runtime_loaded=False)
                ratio = estimated / measured
                ratios[f"fit estimate / measured ({size} {dtype})"] = ratio
                cases.append(
                    {
                        "size": size,
                        "dtype": dtype,
                        "context_tokens": context,
                        "measured_bytes": [s.total_bytes for s in steps],
                        "estimate": option.as_dict(),
                        "required_bytes": estimated,
                        "ratio": ratio,
                    }
                )
                rows.append(
                    [
                        size,
                        dtype,
                        context,
                        f"{option.weights_bytes / MiB:.1f}",
                        f"{option.kv_cache_bytes / MiB:.1f}",
                        f"{option.activation_bytes / MiB:.1f}",
                        f"{(option.tokenizer_bytes + option.overhead_bytes) / MiB:.1f}",
                        f"{option.runtime_bytes / MiB:.1f}",
                        f"{estimated / MiB:.1f}",
                        f"{measured / MiB:.1f}",
                        ratio,
                    ]
                )
                if size == "tiny" and dtype == "float32":
                    runtime = measured - option.model_bytes
                    ratios["fit runtime measured / RUNTIME_BYTES"] = runtime / RUNTIME_BYTES
        extra: dict[str, Any] = {}
        if "tiny" in args.sizes and "bench" in args.sizes:
            pair = memory_probe.measure(
                cache,
                [(REPOS["tiny"], "float32"), (REPOS["bench"], "bfloat16")],
                new_tokens=args.new_tokens,
            )
            second = pair.steps[1]
            option = estimate_for(cache, REPOS["bench"], "bfloat16", second.context_tokens)
            ratios["fit second model estimate / measured (bench bfloat16 after tiny)"] = (
                option.model_bytes / second.total_bytes
            )
            extra = {"second_model": {"measured_bytes": second.total_bytes, **option.as_dict()}}

    print(
        f"\nfit estimate vs measured RSS increase (load + one {args.new_tokens}-token reply), MiB"
    )
    print_table(
        [
            "model", "dtype", "ctx", "weights", "kv", "activ.", "tok+ovh", "runtime",
            "estimate", "measured", "est/meas",
        ],
        rows,
    )  # fmt: skip
    print()
    print_table(["ratio", "value"], [[k, v] for k, v in ratios.items()])
    out = write_results(
        "bench_fit",
        {
            "args": vars(args),
            "runtime_bytes_constant": RUNTIME_BYTES,
            "cases": cases,
            **extra,
            "ratios": ratios,
        },
    )
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
