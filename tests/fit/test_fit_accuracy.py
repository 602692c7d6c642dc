"""The estimate against what a model really takes: within ±15% on CPU, for each size and dtype.

Measured in a fresh interpreter per case (``chatwidget.testing.memory_probe``): torch is
imported and warmed first, then the resident-set increase over a load with the real Engine
and one 512-token reply (as many as the model's context holds) is compared with the estimate
for that context, the once-per-process runtime included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.engine.loader import find_in_cache
from chatwidget.testing import memory_probe
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_REPO, bench_model_path

BENCH_REPO = "bench/smollm2-135m-random"
TOLERANCE = 0.15
NEW_TOKENS = 512


@pytest.fixture(scope="module")
def measure_cache(
    tmp_path_factory: pytest.TempPathFactory, hub_root: Path, small_repo: str
) -> Iterator[Path]:
    """An HF cache with the tiny and small demo models, fetched through the local hub."""
    cache = tmp_path_factory.mktemp("fit-accuracy-cache")
    with LocalHub(hub_root) as hub:
        for repo_id in (DEMO_TINY_REPO, small_repo):
            snapshot_download(repo_id, cache_dir=cache, endpoint=hub.url)
    return cache


def _repo(size: str, cache: Path) -> str:
    if size == "tiny":
        return DEMO_TINY_REPO
    if size == "small":
        return "demo/small-chat"
    with LocalHub(bench_model_path()) as hub:  # about 540 MB, built once per machine
        snapshot_download(BENCH_REPO, cache_dir=cache, endpoint=hub.url)
    return BENCH_REPO


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("size", ["tiny", "small", pytest.param("bench", marks=pytest.mark.bench)])
def test_estimate_is_within_15_percent_of_the_memory_a_load_and_reply_take(
    measure_cache: Path, size: str, dtype: str
) -> None:
    repo_id = _repo(size, measure_cache)
    probe = memory_probe.measure(measure_cache, [(repo_id, dtype)], new_tokens=NEW_TOKENS)
    (step,) = probe.steps
    assert step.new_tokens >= min(NEW_TOKENS, 480)  # tiny's 512-token context caps the reply
    cached = find_in_cache(ModelSpec(repo_id, dtype=dtype), measure_cache)
    model = fit.estimate_files(
        repo_id, cached.config_path, cached.weight_files, context_tokens=step.context_tokens
    )
    estimated = model.option(dtype).required_bytes(runtime_loaded=False)
    measured = step.total_bytes
    ratio = estimated / measured
    print(  # the figures, for the report (pytest -s)
        f"\n{size} {dtype}: estimate {estimated / 2**20:.1f} MiB, measured "
        f"{measured / 2**20:.1f} MiB, ratio {ratio:.3f}"
    )
    assert 1 - TOLERANCE <= ratio <= 1 + TOLERANCE, (
        f"{size} {dtype}: estimated {estimated / 2**20:.1f} MiB but a load and a "
        f"{step.new_tokens}-token reply took {measured / 2**20:.1f} MiB (ratio {ratio:.3f})"
    )
