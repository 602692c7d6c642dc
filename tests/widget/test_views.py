"""Rows say what the user may do, from the lifecycle module: the front end holds no rules."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.downloads.types import DownloadProgress
from chatwidget.errors import GatedRepoError, ServerError
from chatwidget.failure import failure_of
from chatwidget.orchestrator import ModelState, ModelStatus, OrchestratorSnapshot
from chatwidget.orchestrator.lifecycle import can_cancel, can_retry
from chatwidget.session.messages import Message
from chatwidget.widget import views

REPO = "org/model"


def snapshot(status: ModelStatus) -> OrchestratorSnapshot:
    return OrchestratorSnapshot(
        models=MappingProxyType({REPO: status}),
        conversations=MappingProxyType({}),
        active=MappingProxyType({}),
        queue=(),
        working=None,
        seq=0,
    )


@pytest.mark.parametrize("state", list(ModelState))
@pytest.mark.parametrize(
    "failure",
    [None, failure_of(ServerError("HTTP 500")), failure_of(GatedRepoError("gated: add a token"))],
    ids=["no failure", "retryable", "gated"],
)
def test_rows_carry_can_cancel_can_retry_and_action_from_the_lifecycle(
    state: ModelState, failure: object
) -> None:
    failed = state is ModelState.FAILED
    status = ModelStatus(
        state=state,
        progress=DownloadProgress(REPO, 10, 100),
        error=failure.message if failed and failure else None,  # type: ignore[attr-defined]
        failure=failure if failed else None,  # type: ignore[arg-type]
    )
    snap = snapshot(status)
    (row,) = views.download_rows([REPO], snap)
    (model_row,) = views.model_rows([ModelSpec(REPO)], snap)
    for r in (row, model_row):
        assert r["can_cancel"] is can_cancel(state)
        assert r["can_retry"] is can_retry(state, status.failure)
        expected = status.failure.action if failed and status.failure else None
        assert r["action"] == expected
    if failed and failure is not None and not failure.retryable:  # type: ignore[attr-defined]
        assert row["can_retry"] is False
        assert row["action"] == "Add a token"


def test_a_streaming_row_carries_the_text_taken_so_far_and_how_many_chunks() -> None:
    from chatwidget.session.deltas import DeltaStream

    deltas = DeltaStream()
    deltas.open("c1", "m1")
    deltas.append("m1", "Hello")
    deltas.take()
    deltas.append("m1", " there")  # not taken yet: it goes out as chunk 1
    row = views.message_rows([Message("m1", "assistant", "", status="streaming")], deltas)[0]
    assert (row["content"], row["chunks"]) == ("Hello", 1)
    done = views.message_rows([Message("m1", "assistant", "Hello there")], deltas)[0]
    assert (done["content"], done["chunks"]) == ("Hello there", 0)


def test_residency_says_where_a_loaded_model_sits_and_the_notes_to_show() -> None:
    ready = ModelStatus(state=ModelState.READY, placement=("GPU 0", "CPU"), memory_bytes=123)
    (row,) = views.download_rows([REPO], snapshot(ready))
    assert row["residency"] == {
        "placement": ["GPU 0", "CPU"],
        "memory_bytes": 123,
        "can_unload": True,
        "freed_bytes": None,
        "note": None,
    }
    waiting = ModelStatus(
        state=ModelState.DOWNLOADING,
        progress=DownloadProgress(REPO, 0, 100, note="Waiting for another download of org/model"),
    )
    (row,) = views.download_rows([REPO], snapshot(waiting))
    assert row["residency"]["note"] == "Waiting for another download of org/model"
    assert row["residency"]["can_unload"] is False
    compiling = ModelStatus(state=ModelState.COMPILING, note="waiting for the reply on a/b")
    (model_row,) = views.model_rows([ModelSpec(REPO, dtype="bfloat16")], snapshot(compiling))
    assert model_row["residency"]["note"] == "waiting for the reply on a/b"
    assert model_row["precision"] == "bfloat16"
    assert model_row["fit"] is None
