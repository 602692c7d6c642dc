"""``snapshot_download`` from the local hub against ``curl -o`` of the same 200 MB file.

The baseline for the downloader: how close huggingface_hub's plain-HTTP path gets to a raw
HTTP client on loopback. The hub runs in its own process with no rate limit (sendfile); each
round downloads the file once with each method into a fresh folder, in alternating order.

    .venv/bin/python bench/bench_hub_download.py [--mb 200] [--rounds 5]

The 200 MB repo is built once (deterministic) under ``$CHATWIDGET_BENCH_DIR`` or
``~/.cache/chatwidget``. Results go to ``bench/results/bench_hub_download-<time>.json``.
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
import functools
import shutil
import subprocess
from pathlib import Path

from _common import (
    fresh_dir,
    print_table,
    rotating,
    run_hub_process,
    summarize,
    time_call,
    work_dir,
    write_results,
)

from chatwidget.testing.models import build_weights_repo, sha256_of

FILE = "model.safetensors"


def build_repo(root: Path, megabytes: int) -> tuple[str, Path]:
    """Build ``bench/blob-<N>mb`` once; return its repo id and weights file."""
    repo_id = f"bench/blob-{megabytes}mb"
    folder = root / repo_id
    marker = folder / ".complete"  # hidden files are not served
    if not marker.is_file():
        print(f"building {repo_id} in {root} (once)...", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        build_weights_repo(root, repo_id, megabytes * 1_000_000, seed=0)
        marker.write_text("ok\n")
    return repo_id, folder / FILE


def curl(url: str, repo_id: str, dest: Path) -> Path:
    """Download the file with ``curl -o``."""
    out = dest / FILE
    subprocess.run(
        ["curl", "-sSf", "-o", str(out), f"{url}/{repo_id}/resolve/main/{FILE}"], check=True
    )
    return out


def snapshot(url: str, repo_id: str, dest: Path) -> Path:
    """Download the same file with ``snapshot_download`` into a fresh cache."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(repo_id, endpoint=url, cache_dir=dest, allow_patterns=[FILE])
    return Path(folder) / FILE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (default 200)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    if shutil.which("curl") is None:
        parser.error("curl is not installed; it is the baseline (apt-get install curl).")
    hub_root = work_dir() / "bench-hub-download"
    repo_id, source = build_repo(hub_root, args.mb)
    size = source.stat().st_size
    expected_sha = sha256_of(source)
    scratch = work_dir() / "bench-scratch"
    scratch.mkdir(exist_ok=True)

    methods = {"curl": curl, "snapshot_download": snapshot}
    times: dict[str, list[float]] = {name: [] for name in methods}
    with run_hub_process(hub_root) as url:
        # Warm up: the page cache, the hub's hash cache, and each client once, untimed.
        for fetch in methods.values():
            with fresh_dir(scratch) as dest:
                got = fetch(url, repo_id, dest)
                if sha256_of(got) != expected_sha:
                    raise SystemExit(f"{fetch.__name__} downloaded different bytes")
        for round_no in range(args.rounds):
            for name in rotating(list(methods), round_no):
                fetch = methods[name]
                with fresh_dir(scratch) as dest:
                    elapsed = time_call(functools.partial(fetch, url, repo_id, dest))
                times[name].append(elapsed)
                print(f"round {round_no + 1}  {name:18} {elapsed:7.3f} s", flush=True)

    stats = {name: summarize(samples) for name, samples in times.items()}
    mb_per_s = {name: size / s["median"] / 1e6 for name, s in stats.items()}
    ratio = stats["curl"]["median"] / stats["snapshot_download"]["median"]
    ratio_best = stats["curl"]["min"] / stats["snapshot_download"]["min"]
    print(f"\n{repo_id}: {size / 1e6:.0f} MB, {args.rounds} rounds, hub in its own process")
    print_table(
        ["method", "min s", "median s", "max s", "MB/s (median)"],
        [
            [name, s["min"], s["median"], s["max"], f"{mb_per_s[name]:.0f}"]
            for name, s in stats.items()
        ],
    )
    print(
        f"\nsnapshot_download throughput / curl throughput: {ratio:.2f}x (median), "
        f"{ratio_best:.2f}x (best)"
    )
    out = write_results(
        "bench_hub_download",
        {
            "repo": repo_id,
            "bytes": size,
            "rounds": args.rounds,
            "raw_s": times,
            "stats_s": stats,
            "mb_per_s_median": mb_per_s,
            "snapshot_vs_curl_throughput_median": ratio,
            "snapshot_vs_curl_throughput_best": ratio_best,
            "ratios": {"snapshot_download_over_curl": ratio},
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
