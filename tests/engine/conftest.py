"""Engine test fixtures: real tiny models, downloaded into an HF cache through the local hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chatwidget.engine import Engine
from tests.engine.helpers import NO_TEMPLATE, PICKLE_ONLY, SEEDS

if TYPE_CHECKING:
    from chatwidget.engine.loader import LoadedModel


def _build_pickle_only(root: Path) -> None:
    """A tiny model whose weights are only a pickle checkpoint (``pytorch_model.bin``)."""
    import torch
    from safetensors.torch import load_file

    from chatwidget.testing.models import build_model

    folder = build_model(root, PICKLE_ONLY, "tiny", seed=4)
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()


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
    _build_pickle_only(hub_root)
    cache = tmp_path_factory.mktemp("engine-cache")
    with LocalHub(hub_root) as hub:
        for repo_id in [*SEEDS, NO_TEMPLATE, PICKLE_ONLY]:
            snapshot_download(repo_id, cache_dir=cache, endpoint=hub.url)
    return cache


@pytest.fixture
def engine(engine_cache: Path) -> Iterator[Engine]:
    """An engine over the test cache with a budget far above the tiny models' needs."""
    eng = Engine(cache_dir=engine_cache, memory_budget_bytes=8 * 1024**3)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A tiny real model with its tokenizer and chat template, loaded in this process (no
    engine, no hub): for the streaming core's own tests."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatwidget.catalog import ModelSpec
    from chatwidget.engine.loader import LoadedModel
    from chatwidget.testing.models import build_model

    folder = build_model(tmp_path_factory.mktemp("tiny"), "test-org/tiny-loaded", "tiny")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    return LoadedModel(ModelSpec("test-org/tiny-loaded"), model, tok, memory_bytes=0, device_map={})
