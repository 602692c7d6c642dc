"""Downloader throughput against plain ``snapshot_download`` and ``curl``, in one run.

The local hub runs in its own process (sendfile, no rate limit) over the hub root of
``bench_hub_download.py`` and serves two repos of the same size:

- ``bench/blob-<N>mb``: the one-file repo ``bench_hub_download.py`` measures;
- ``bench/sharded-<N>mb``: the same number of bytes in 4 safetensors shards, where fetching
  files in parallel can help.

Every round downloads each repo into a fresh cache with each method, in a rotating order; the
medians are compared as ratios (higher = faster than the baseline).

    .venv/bin/python bench/bench_downloader.py [--mb 200] [--shards 4] [--rounds 3]

Results go to ``bench/results/bench_downloader-<time>.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import fresh_dir, rotating, run_hub_process, time_call, work_dir, write_results
from bench_hub_download import build_repo
from huggingface_hub import snapshot_download

from chatwidget.downloads import Downloader

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


def build_sharded(root: Path, megabytes: int, shards: int) -> str:
    """``bench/sharded-<N>mb``: ``shards`` safetensors files of N/shards MB and a config."""
    repo_id = f"bench/sharded-{megabytes}mb"
    folder = root / repo_id
    marker = folder / ".built"
    if marker.exists() and marker.read_text() == str(shards):
        return repo_id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        _write_weights(folder / name, megabytes * 1_000_000 // shards)
    marker.write_text(str(shards))
    return repo_id


def _curl(url: str, repo_id: str, files: list[str], dest: Path) -> None:
    for name in files:
        subprocess.run(
            ["curl", "-sSf", "-o", str(dest / name), f"{url}/{repo_id}/resolve/main/{name}"],
            check=True,
        )


def _snapshot(url: str, repo_id: str, dest: Path) -> None:
    snapshot_download(repo_id, endpoint=url, cache_dir=dest)


def _downloader(url: str, repo_id: str, dest: Path, **kwargs: object) -> None:
    dl = Downloader(endpoint=url, cache_dir=dest, token=False, **kwargs)  # type: ignore[arg-type]
    dl.download(repo_id, on_progress=lambda _p: None, cancel=threading.Event())


def _prestarted(url: str, repo_id: str, dest: Path) -> float:
    """Downloader(prestart=True), timed from download() once its spare process is up.

    This is how a widget uses it: the process starts when the downloader is made, long before
    the user picks a model. The warm-up wait is outside the timed section.
    """
    dl = Downloader(endpoint=url, cache_dir=dest, token=False, prestart=True)
    try:
        time.sleep(PRESTART_WAIT_S)  # let the spare finish importing
        return time_call(
            lambda: dl.download(repo_id, on_progress=lambda _p: None, cancel=threading.Event())
        )
    finally:
        dl.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of each repo in MB")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        parser.error("curl is not installed; it is a baseline (apt-get install curl).")

    hub_root = work_dir() / "bench-hub-download"  # shared with bench_hub_download.py
    single, _weights = build_repo(hub_root, args.mb)
    sharded = build_sharded(hub_root, args.mb, args.shards)
    files = {
        repo: sorted(
            str(p.relative_to(hub_root / repo))
            for p in (hub_root / repo).rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        for repo in (single, sharded)
    }
    size = {
        repo: sum((hub_root / repo / f).stat().st_size for f in fs) for repo, fs in files.items()
    }
    scratch = work_dir() / "bench-scratch"
    scratch.mkdir(exist_ok=True)

    methods: dict[str, Callable[[str, str, Path], float | None]] = {
        "curl": lambda u, r, d: _curl(u, r, files[r], d),
        "snapshot_download": _snapshot,
        "downloader": _downloader,
        "downloader_1_file_at_a_time": lambda u, r, d: _downloader(u, r, d, max_parallel_files=1),
        "downloader_no_verify": lambda u, r, d: _downloader(u, r, d, verify=False),
        "downloader_prestarted": _prestarted,
    }
    times: dict[str, dict[str, list[float]]] = {repo: {n: [] for n in methods} for repo in files}
    with run_hub_process(hub_root) as url:
        for repo in files:  # warm the page cache and the hub's hash cache, untimed
            with fresh_dir(scratch) as dest:
                _snapshot(url, repo, dest)
        for round_no in range(args.rounds):
            for repo in files:
                for name in rotating(list(methods), round_no):
                    with fresh_dir(scratch) as dest:
                        method = methods[name]
                        if name == "downloader_prestarted":
                            elapsed = _prestarted(url, repo, dest)
                        else:
                            elapsed = time_call(functools.partial(method, url, repo, dest))
                    times[repo][name].append(elapsed)
                    print(f"round {round_no + 1} {repo:20} {name:28} {elapsed:6.3f} s", flush=True)

    summary: dict[str, dict[str, object]] = {}
    for repo, by_method in times.items():
        medians = {n: statistics.median(v) for n, v in by_method.items()}
        base = medians["snapshot_download"]
        summary[repo] = {
            "bytes": size[repo],
            "files": len(files[repo]),
            "median_s": medians,
            "mb_per_s": {n: size[repo] / t / 1e6 for n, t in medians.items()},
            "throughput_vs_snapshot_download": {n: base / t for n, t in medians.items()},
            "throughput_vs_curl": {n: medians["curl"] / t for n, t in medians.items()},
        }
        print(
            f"\n{repo} ({size[repo] / 1e6:.0f} MB in {len(files[repo])} files, "
            f"median of {args.rounds})"
        )
        print(f"  {'method':28} {'median s':>9} {'MB/s':>8} {'vs snapshot_download':>21}")
        for n, t in medians.items():
            print(f"  {n:28} {t:9.3f} {size[repo] / t / 1e6:8.1f} {base / t:20.2f}x")
        print("  goal: downloader >= 0.95x snapshot_download")

    ratios: dict[str, float] = {}
    for repo, info in summary.items():
        vs_snapshot = info["throughput_vs_snapshot_download"]
        vs_curl = info["throughput_vs_curl"]
        assert isinstance(vs_snapshot, dict)
        assert isinstance(vs_curl, dict)
        label = "one weights file" if repo == single else f"{args.shards} shards"
        # "prestarted" is how the widget runs it (runtime.py): the child is already imported.
        ratios[f"prestarted_downloader_over_snapshot_download ({label})"] = vs_snapshot[
            "downloader_prestarted"
        ]
        ratios[f"cold_downloader_over_snapshot_download ({label})"] = vs_snapshot["downloader"]
        ratios[f"prestarted_downloader_over_curl ({label})"] = vs_curl["downloader_prestarted"]
    out = write_results(
        "bench_downloader",
        {"rounds": args.rounds, "raw_s": times, "summary": summary, "ratios": ratios},
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
