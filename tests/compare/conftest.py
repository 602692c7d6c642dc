"""Compare fixtures: real widgets on the local hub (tiny models), closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_B_REPO, DEMO_TINY_REPO
from chatwidget.widget import ChatWidget


@pytest.fixture
def make_chat(hf_cache: Path, local_hub: LocalHub) -> Iterator[Callable[..., ChatWidget]]:
    """``make_chat(**kwargs)``: a ChatWidget on the local hub with short replies."""
    made: list[ChatWidget] = []

    def make(**kwargs: Any) -> ChatWidget:
        kwargs.setdefault("models", [DEMO_TINY_REPO, DEMO_TINY_B_REPO])
        chat = ChatWidget(endpoint=local_hub.url, cache_dir=hf_cache, **kwargs)
        chat.set_settings(max_new_tokens=24)
        made.append(chat)
        return chat

    yield make
    for chat in made:
        chat.close()
