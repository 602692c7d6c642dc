"""Downloader throughput against plain ``snapshot_download`` and ``curl``, in one run.

The local hub runs in its own process (sendfile, no rate limit) and serves two repos of the
same total size: one weights file, and the same bytes split in shards (where fetching files in
parallel can help). Every round downloads each repo into a fresh cache with each method, in a
rotating order; the medians are compared as ratios (higher = faster than the baseline).

    .venv/bin/python bench/bench_downloader.py [--mb 240] [--shards 4] [--rounds 3]

Results go to ``bench/results/bench_downloader-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import snapshot_download

from chatwidget.downloads import Downloader
from chatwidget.testing.hub import run_hub_process

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 8 * 1024 * 1024
PRESTART_WAIT_S = 4.0


def _write_weights(path: Path, size: int) -> None:
    """A valid safetensors file of one uint8 tensor of random (incompressible) bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    raw = header.encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        left = size
        while left > 0:
            fh.write(os.urandom(min(left, BLOCK)))
            left -= BLOCK


def build_repos(root: Path, total_mb: int, shards: int) -> dict[str, list[str]]:
    """``bench/single-file`` (one file) and ``bench/sharded`` (``shards`` files), same bytes."""
    total = total_mb * 1_000_000
    repos: dict[str, list[str]] = {}
    for repo, count in (("bench/single-file", 1), ("bench/sharded", shards)):
        folder = root / repo
        files = (
            ["model.safetensors"]
            if count == 1
            else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        marker = folder / ".built"
        if not marker.exists() or marker.read_text() != f"{total}:{count}:st":
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
            for name in files:
                _write_weights(folder / name, total // count)
            marker.write_text(f"{total}:{count}:st")
        repos[repo] = files
    return repos


def _curl(url: str, repo: str, files: list[str], dest: Path) -> None:
    for name in ["config.json", *files]:
        subprocess.run(
            [
                "curl",
                "-sf",
                "-o",
                str(dest / name.replace("/", "_")),
                f"{url}/{repo}/resolve/main/{name}",
            ],
            check=True,
        )


def _snapshot(url: str, repo: str, dest: Path) -> None:
    snapshot_download(repo, endpoint=url, cache_dir=dest)


def _downloader(url: str, repo: str, dest: Path, **kwargs: object) -> None:
    dl = Downloader(endpoint=url, cache_dir=dest, token=False, **kwargs)  # type: ignore[arg-type]
    dl.download(repo, on_progress=lambda _p: None, cancel=threading.Event())


def _timed(fn: Callable[[Path], None], scratch: Path) -> float:
    dest = Path(tempfile.mkdtemp(dir=scratch))
    try:
        started = time.perf_counter()
        fn(dest)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _timed_prestarted(url: str, repo: str, scratch: Path) -> float:
    """Downloader(prestart=True), timed from download() once its spare process is up.

    This is how the widget uses it: the process starts when the downloader is made, long
    before the user picks a model. The warm-up waits outside the timed section.
    """
    dest = Path(tempfile.mkdtemp(dir=scratch))
    dl = Downloader(endpoint=url, cache_dir=dest, token=False, prestart=True)
    try:
        time.sleep(PRESTART_WAIT_S)  # let the spare finish importing
        started = time.perf_counter()
        dl.download(repo, on_progress=lambda _p: None, cancel=threading.Event())
        return time.perf_counter() - started
    finally:
        dl.close()
        shutil.rmtree(dest, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=240, help="total size of each repo (MB)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("CHATWIDGET_BENCH_DIR", Path.home() / ".cache/chatwidget")),
    )
    args = parser.parse_args()

    hub_root = args.work / "bench-downloader-hub"
    scratch = args.work / "bench-downloader-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    repos = build_repos(hub_root, args.mb, args.shards)
    size = {
        repo: sum((hub_root / repo / n).stat().st_size for n in [*files, "config.json"])
        for repo, files in repos.items()
    }

    times: dict[str, dict[str, list[float]]] = {repo: {} for repo in repos}
    with run_hub_process(hub_root) as url:
        methods: dict[str, Callable[[str, str, Path], None]] = {
            "curl": lambda u, r, d: _curl(u, r, repos[r], d),
            "snapshot_download": _snapshot,
            "downloader": _downloader,
            "downloader_1_file_at_a_time": lambda u, r, d: _downloader(
                u, r, d, max_parallel_files=1
            ),
            "downloader_no_verify": lambda u, r, d: _downloader(u, r, d, verify=False),
            "downloader_prestarted": lambda u, r, d: None,  # timed by _timed_prestarted
        }
        names = list(methods)
        for repo in repos:  # warm the page cache and the hub's hash cache
            _timed(lambda d, r=repo: _snapshot(url, r, d), scratch)
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for repo in repos:
                for name in order:
                    if name == "downloader_prestarted":
                        elapsed = _timed_prestarted(url, repo, scratch)
                    else:
                        elapsed = _timed(lambda d, n=name, r=repo: methods[n](url, r, d), scratch)
                    times[repo].setdefault(name, []).append(elapsed)
                    print(f"round {round_no + 1} {repo:18} {name:28} {elapsed:6.3f} s", flush=True)

    summary: dict[str, dict[str, object]] = {}
    for repo, by_method in times.items():
        medians = {n: statistics.median(v) for n, v in by_method.items()}
        mbps = {n: size[repo] / t / 1e6 for n, t in medians.items()}
        summary[repo] = {
            "bytes": size[repo],
            "median_s": medians,
            "mb_per_s": mbps,
            "downloader_vs_snapshot_download": medians["snapshot_download"] / medians["downloader"],
            "downloader_vs_curl": medians["curl"] / medians["downloader"],
            "prestarted_vs_snapshot_download": medians["snapshot_download"]
            / medians["downloader_prestarted"],
            "snapshot_download_vs_curl": medians["curl"] / medians["snapshot_download"],
        }
        print(f"\n{repo} ({size[repo] / 1e6:.0f} MB, median of {args.rounds})")
        for n in names:
            print(f"  {n:28} {medians[n]:6.3f} s  {mbps[n]:7.1f} MB/s")
        print(
            f"  downloader / snapshot_download throughput: "
            f"{summary[repo]['downloader_vs_snapshot_download']:.2f}x (goal >= 0.95x)"
        )
        print(
            f"  prestarted downloader / snapshot_download: "
            f"{summary[repo]['prestarted_vs_snapshot_download']:.2f}x"
        )
        print(
            f"  downloader / curl throughput:              "
            f"{summary[repo]['downloader_vs_curl']:.2f}x"
        )

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_downloader-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "bench": "downloader",
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": sys.version.split()[0],
                },
                "rounds": args.rounds,
                "raw_s": times,
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
