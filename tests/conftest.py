"""Fixtures every test can use. Nothing here touches the real HF cache, a real token or the network.

- ``hf_home`` (autouse, function): a fresh temporary ``HF_HOME``, set in the environment (child
  processes inherit it) and patched into ``huggingface_hub.constants`` (which reads it at
  import). ``HF_TOKEN`` and friends are unset and telemetry is off. Returns the path.
- ``history_file`` (autouse, function): points ``CHATWIDGET_HISTORY`` at a file in a fresh temp
  dir, so no test writes the real user data folder. Returns the path.
- ``hf_cache`` (function): the hub cache inside it (``HF_HOME/hub``), for ``cache_dir=``.
- ``hub_root`` (session): a folder with the tiny demo repos (``demo/tiny-chat``,
  ``demo/tiny-chat-b``, ``gated/tiny-chat``), built once per session.
- ``small_repo`` (session): builds ``demo/small-chat`` (about 28 MB, two shards) into
  ``hub_root`` on first use and returns its repo id.
- ``local_hub`` (function): a :class:`~chatwidget.testing.hub.LocalHub` over ``hub_root``,
  shared by the session but reset around each test (no faults, empty request log, no rate
  limit). ``gated/tiny-chat`` is gated with ``GATED_TOKEN``. Do not stop it; start your own
  ``LocalHub`` for tests about stopping.
- ``hf_endpoint`` (function): points ``HF_ENDPOINT``, ``huggingface_hub.constants.ENDPOINT``,
  the URL template and the default ``HfApi`` at ``local_hub``, so calls without
  ``endpoint=`` reach it. Returns the URL.

Repo ids and the gated token live in :mod:`chatwidget.testing.models` (``DEMO_TINY_REPO``,
``DEMO_TINY_B_REPO``, ``DEMO_SMALL_REPO``, ``DEMO_GATED_REPO``, ``DEMO_GATED_TOKEN``): import
them from there, not ``from conftest import``, which breaks when several folders have a
conftest.py and the whole suite runs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import (
    DEMO_GATED,
    DEMO_GATED_REPO,
    DEMO_GATED_TOKEN,
    DEMO_SMALL_REPO,
    DEMO_TINY_REPO,
    build_demo_hub,
    build_model,
)

_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN")

# huggingface_hub reads these when it is first imported; make sure that import never sees the
# real home, a real token or a real endpoint override, whoever imports it first.
_SESSION_HF_HOME = tempfile.mkdtemp(prefix="chatwidget-hf-home-")
atexit.register(shutil.rmtree, _SESSION_HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _SESSION_HF_HOME
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["CHATWIDGET_HISTORY"] = str(Path(_SESSION_HF_HOME) / "history.sqlite3")
for _var in (
    *_TOKEN_VARS,
    "HF_ENDPOINT",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_XET_CACHE",
    "HF_ASSETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_MODULES_CACHE",
):
    os.environ.pop(_var, None)

GATED_REPO = DEMO_GATED_REPO
GATED_TOKEN = DEMO_GATED_TOKEN
TINY_REPO = DEMO_TINY_REPO
SMALL_REPO = DEMO_SMALL_REPO

# Constants of huggingface_hub derived from HF_HOME at import time.
_HOME_PATHS = {
    "HF_HOME": "",
    "HF_HUB_CACHE": "hub",
    "HUGGINGFACE_HUB_CACHE": "hub",
    "HF_ASSETS_CACHE": "assets",
    "HUGGINGFACE_ASSETS_CACHE": "assets",
    "HF_XET_CACHE": "xet",
    "HF_TOKEN_PATH": "token",
    "HF_STORED_TOKENS_PATH": "stored_tokens",
    "CHECK_FOR_UPDATE_DONE_PATH": ".check_for_update_done",
    "CHECK_FOR_SKILL_UPDATE_DONE_PATH": ".check_for_skill_update_done",
    "AGENT_HARNESSES_PATH": ".agent_harnesses.json",
}


@pytest.fixture(autouse=True)
def hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF_HOME for this test, in the environment and in huggingface_hub's constants."""
    from huggingface_hub import constants

    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in _TOKEN_VARS:
        monkeypatch.delenv(var, raising=False)
    for name, rel in _HOME_PATHS.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, str(home / rel) if rel else str(home))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "HF_MODULES_CACHE"):
        monkeypatch.setattr(transformers_hub, "HF_MODULES_CACHE", str(home / "modules"))
    return home


@pytest.fixture(autouse=True)
def history_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``CHATWIDGET_HISTORY`` file for this test: the real user data dir stays untouched."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite3"
    monkeypatch.setenv("CHATWIDGET_HISTORY", str(path))
    return path


@pytest.fixture
def hf_cache(hf_home: Path) -> Path:
    """The hub cache of this test's HF_HOME (``HF_HOME/hub``)."""
    return hf_home / "hub"


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of tiny demo repos, built once per session."""
    root = tmp_path_factory.mktemp("hub_root")
    build_demo_hub(root, include_small=False)
    return root


@pytest.fixture(scope="session")
def small_repo(hub_root: Path) -> str:
    """Build ``demo/small-chat`` (about 28 MB, two safetensors shards) once; return its id."""
    if not (hub_root / SMALL_REPO / "config.json").is_file():
        build_model(hub_root, SMALL_REPO, "small", seed=0)
    return SMALL_REPO


@pytest.fixture(scope="session")
def _session_hub(hub_root: Path) -> Iterator[LocalHub]:
    with LocalHub(hub_root, gated=DEMO_GATED) as hub:
        yield hub


@pytest.fixture
def local_hub(_session_hub: LocalHub) -> Iterator[LocalHub]:
    """The session's local hub, reset before and after this test."""
    _session_hub.reset()
    yield _session_hub
    _session_hub.reset()


@pytest.fixture
def hf_endpoint(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point huggingface_hub (and transformers through it) at ``local_hub``; return the URL."""
    from huggingface_hub import constants, hf_api

    url = local_hub.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    # transformers keeps one HfApi of its own, created on first use with the endpoint of that
    # moment; drop it so it is made again for this hub (and restored to None afterwards).
    import transformers.utils.hub as transformers_hub

    monkeypatch.setattr(transformers_hub, "_hf_api", None)
    return url
