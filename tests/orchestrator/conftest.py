"""Fixtures for the orchestrator's sequencing tests (fake boundaries, no thread)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from orch_fakes import FakeDownloader, FakeEngine, Recorder

from chatwidget.orchestrator import Orchestrator


@pytest.fixture
def downloader() -> FakeDownloader:
    return FakeDownloader()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def orch(downloader: FakeDownloader, engine: FakeEngine) -> Iterator[Orchestrator]:
    """A stepped orchestrator (start=False) with one on-screen conversation "c1"."""
    orchestrator = Orchestrator(downloader, engine, start=False)
    orchestrator.open_conversation("c1")
    yield orchestrator
    orchestrator.close()


@pytest.fixture
def recorder(orch: Orchestrator) -> Recorder:
    recorder = Recorder()
    orch.subscribe(recorder)
    return recorder
