"""Fixtures for the remote engine: a real ``transformers serve`` and the fault proxy before it.

- ``served`` (session): ``transformers serve`` (offline, CPU, loopback) serving a tiny model
  built by the factory; started once per session (about 5-25 s).
- ``proxy`` (function): the session's :class:`FaultProxy` in front of it (no key checked),
  reset before and after each test.
- ``remote`` (function): a :class:`RemoteEngine` with small timeouts and backoffs, with the
  proxy added as server ``"ts"``; ``remote_key`` is the served model's key on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatwidget.catalog import remote_key
from chatwidget.engine import Engine
from chatwidget.engine.remote import RemoteEngine
from chatwidget.testing.fault_proxy import FaultProxy
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_REPO, build_model
from chatwidget.testing.transformers_serve import ServedModel, run_transformers_serve
from tests.remote.helpers import QUICK, SERVER


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    """``transformers serve`` on a tiny model, for the whole session."""
    folder = build_model(tmp_path_factory.mktemp("served"), "demo/served-chat", "tiny", seed=3)
    with run_transformers_serve(folder) as served_model:
        yield served_model


@pytest.fixture(scope="session")
def _session_proxy(served: ServedModel) -> Iterator[FaultProxy]:
    with FaultProxy(served.url) as proxy:
        yield proxy


@pytest.fixture
def proxy(_session_proxy: FaultProxy) -> Iterator[FaultProxy]:
    """The session's proxy in front of ``served``, reset around this test."""
    _session_proxy.reset()
    yield _session_proxy
    _session_proxy.reset()


@pytest.fixture
def remote(proxy: FaultProxy) -> Iterator[RemoteEngine]:
    """A remote engine with quick settings and the proxy as server ``ts``."""
    engine = RemoteEngine(settings=QUICK)
    engine.add_server(proxy.url + "/v1", name=SERVER)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def key(served: ServedModel) -> str:
    """The served model's key on server ``ts``."""
    return remote_key(SERVER, served.model_id)


@pytest.fixture
def local_engine_with_tiny(
    hf_endpoint: str, hf_cache: Path, local_hub: LocalHub
) -> Iterator[tuple[Engine, str]]:
    """A local engine with ``demo/tiny-chat`` downloaded from the local hub and loaded."""
    from huggingface_hub import snapshot_download

    from chatwidget.catalog import ModelSpec

    snapshot_download(DEMO_TINY_REPO, cache_dir=hf_cache, endpoint=hf_endpoint)
    engine = Engine(cache_dir=hf_cache, memory_budget_bytes=2 * 1024**3)
    engine.load(ModelSpec(DEMO_TINY_REPO))
    try:
        yield engine, DEMO_TINY_REPO
    finally:
        engine.close()
