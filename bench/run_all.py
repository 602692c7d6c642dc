"""Run every benchmark and print one table of ratios; write it to bench/results/summary.json.

    .venv/bin/python bench/run_all.py [--quick]

Each benchmark compares chatwidget with a baseline measured in the same run and writes a JSON
file with a ``ratios`` mapping. This script runs them one after another (each in its own
process, so one's memory does not disturb the next), then collects the ratios with their goals.
``--quick`` passes smaller round counts for a fast check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, machine, print_table

HERE = Path(__file__).resolve().parent

#: script -> (results name prefix, full args, quick args)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "bench_hub_download.py": ("bench_hub_download", [], ["--rounds", "1"]),
    "bench_downloader.py": ("bench_downloader", [], ["--rounds", "1"]),
    "bench_engine.py": ("bench_engine", [], ["--rounds", "1", "--switches", "6"]),
    "bench_widget.py": ("widget", [], ["--messages", "100"]),
    "bench_widget_stream.py": ("widget_stream", [], ["--rounds", "3"]),
    "bench_remote.py": ("bench_remote", [], ["--rounds", "3", "--stops", "3"]),
    "bench_history.py": (
        "bench_history",
        [],
        ["--rounds", "3", "--kills", "3", "--turns", "30"],
    ),
    "bench_widget_history.py": (
        "bench_widget_history",
        [],
        ["--rounds", "3", "--kills", "3", "--turns", "30"],
    ),
    "bench_fit.py": ("bench_fit", [], ["--sizes", "tiny", "small"]),
    "bench_lifecycle.py": ("bench_lifecycle", [], ["--rounds", "2", "--samples", "2"]),
    "bench_compare.py": ("bench_compare", [], ["--rounds", "2"]),
}

#: ratio name -> goal as text (what "good" means); ratios without a goal are informative.
GOALS: dict[str, str] = {
    "tokens_per_s_engine_over_plain": ">= 0.97",
    "load_time_engine_over_plain": "<= 1.05",
    "rss_after_last_switch_over_first": "<= 1.05",
    "prestarted_downloader_over_snapshot_download (one weights file)": ">= 0.95",
    "prestarted_downloader_over_snapshot_download (4 shards)": ">= 0.95",
    "download trait updates per s (/10 goal)": "<= 1.0",
    "cancel latency (/0.5 s goal)": "<= 1.0",
    "widget_tokens_per_s_over_plain_generate": ">= 0.97",
    "widget_tokens_per_s_over_plain_generate (small model)": ">= 0.97",
    "turn_at_1000_messages_over_plain_generate (short_context)": "<= 1.05",
    "turn_at_1000_messages_over_plain_generate (long_context)": "<= 1.05",
    "bytes_per_token_over_200 (fresh chat)": "<= 1.0",
    "bytes_per_token_over_200 (1000 messages, short_context)": "<= 1.0",
    "bytes_per_token_over_200 (1000 messages, long_context)": "<= 1.0",
    "tokens_per_s_engine_over_direct": ">= 0.97",
    "ttft_engine_over_direct": "<= 1.05",
    "tokens_per_s_widget_over_direct": ">= 0.97",
    "ttft_widget_over_direct": "<= 1.05",
    "stop_latency_over_chunk_interval_plus_50ms": "<= 1.0",
    "restore 10,000 messages / plain sqlite3 read": "<= 2.0",
    "append_text per token at 1,000 messages / at 1": "<= 1.10",
    "rows lost (two writers)": "== 0",
    "SIGKILL runs losing more than the turn in flight": "== 0",
    "widget restore 10,000 messages / plain sqlite3 read": "<= 2.0",
    "widget SIGKILL runs losing more than the turn in flight": "== 0",
    **{
        f"fit estimate / measured ({size} {dtype})": "0.85 .. 1.15"
        for size in ("tiny", "small", "bench")
        for dtype in ("bfloat16", "float32")
    },
    "fit second model estimate / measured (bench bfloat16 after tiny)": "0.85 .. 1.15",
    "cold_swap_peak_rss_over_larger_model_alone": "<= 1.1",
    "rss_after_unload_over_before_first_load": "<= 1.05",
    "ttft_during_download_over_idle": "<= 1.2",
    "compare column tokens/s / solo (min over columns)": ">= 0.9",
    "view choice matches measurement (default rule)": "== 1",
    "view choice matches measurement (measurement recorded)": "== 1",
}


def newest(prefix: str, since: float) -> dict[str, Any]:
    files = [p for p in RESULTS_DIR.glob(f"{prefix}-*.json") if p.stat().st_mtime >= since]
    if not files:
        raise RuntimeError(f"{prefix}: no results written")
    data: dict[str, Any] = json.loads(max(files, key=lambda p: p.stat().st_mtime).read_text())
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a fast check")
    parser.add_argument("--only", nargs="*", help="run only these scripts")
    args = parser.parse_args()

    rows: list[list[object]] = []
    summary: dict[str, Any] = {"machine": machine(), "benches": {}}
    started_all = time.monotonic()
    failed = []
    for script, (prefix, full, quick) in BENCHES.items():
        if args.only and script not in args.only:
            continue
        print(f"\n=== {script}", flush=True)
        since = time.time() - 1
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(HERE / script), *(quick if args.quick else full)],
            cwd=HERE,
            check=False,
        )
        took = time.monotonic() - t0
        if proc.returncode != 0:
            failed.append(script)
            continue
        data = newest(prefix, since)
        ratios: dict[str, float] = data.get("ratios", {})
        if not ratios:
            failed.append(f"{script} (no ratios)")
        summary["benches"][script] = {"seconds": took, "ratios": ratios}
        for name, value in ratios.items():
            rows.append(
                [
                    script.removeprefix("bench_").removesuffix(".py"),
                    name,
                    float(value),
                    GOALS.get(name, ""),
                ]
            )
    summary["seconds"] = time.monotonic() - started_all
    print(f"\n=== all benchmarks ({summary['seconds']:.0f} s)")
    print_table(["bench", "ratio", "value", "goal"], rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "summary.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print("wrote", out)
    if failed:
        print("FAILED:", ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
