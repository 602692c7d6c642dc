"""Engine test fixtures: real tiny models, downloaded into an HF cache through the local hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatwidget.engine import Engine
from tests.engine.helpers import NO_TEMPLATE, SEEDS


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF cache holding the engine's test models, fetched with ``snapshot_download``.

    The hub is stopped once the downloads finish, so every load in these tests also proves
    that loading never touches the network.
    """
    from huggingface_hub import snapshot_download

    from chatwidget.testing.hub import LocalHub
    from chatwidget.testing.models import build_model

    hub_root = tmp_path_factory.mktemp("engine-hub")
    for repo_id, seed in SEEDS.items():
        build_model(hub_root, repo_id, "tiny", seed=seed)
    build_model(hub_root, NO_TEMPLATE, "tiny", seed=3, chat_template=False)
    cache = tmp_path_factory.mktemp("engine-cache")
    with LocalHub(hub_root) as hub:
        for repo_id in [*SEEDS, NO_TEMPLATE]:
            snapshot_download(repo_id, cache_dir=cache, endpoint=hub.url)
    return cache


@pytest.fixture
def engine(engine_cache: Path) -> Iterator[Engine]:
    """An engine over the test cache with a budget far above the tiny models' needs."""
    eng = Engine(cache_dir=engine_cache, memory_budget_bytes=8 * 1024**3)
    yield eng
    eng.close()
