"""Restore on the real path: a kernel process writes the history file, a new process (this
one) opens a widget on it; a kernel SIGKILLed mid-reply shows that reply as interrupted.
Also the store's bad states as the widget shows them, and workspaces."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_B_REPO, DEMO_TINY_REPO
from chatwidget.testing.parrot import build_parrot_model
from chatwidget.widget import ChatWidget

KERNEL = Path(__file__).with_name("history_kernel.py")
ROOT = Path(__file__).resolve().parents[2]


PARROT = "demo/parrot-story-small"


def kernel(
    mode: str, local_hub: LocalHub, cache: Path, history: Path, *extra: str
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(KERNEL), mode, local_hub.url, str(cache), str(history), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(scope="session")
def parrot_repo(hub_root: Path) -> str:
    """A real small model whose replies never end early (it repeats "la " until its
    2,048-token context is full: several seconds), built into the local hub once."""
    if not (hub_root / PARROT / "config.json").is_file():
        build_parrot_model(hub_root, PARROT, text="la ", size="small")
    return PARROT


@pytest.fixture
def restored(
    hf_cache: Path, local_hub: LocalHub, history_file: Path
) -> Iterator[Callable[..., ChatWidget]]:
    made: list[ChatWidget] = []

    def make(**kwargs: Any) -> ChatWidget:
        kwargs.setdefault("history", history_file)
        kwargs.setdefault("models", [DEMO_TINY_REPO, DEMO_TINY_B_REPO])
        chat = ChatWidget(
            endpoint=local_hub.url,
            cache_dir=hf_cache,
            **kwargs,
        )
        made.append(chat)
        return chat

    yield make
    for chat in made:
        chat.close()


def test_a_new_process_restores_conversations_models_and_settings(
    restored: Callable[..., ChatWidget], local_hub: LocalHub, hf_cache: Path, history_file: Path
) -> None:
    proc = kernel("write", local_hub, hf_cache, history_file)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    written = json.loads(out.strip().splitlines()[-1])

    chat = restored()
    s = chat.session
    assert chat.conversation_id == written["active"]
    assert dataclasses.asdict(s.settings) == written["settings"]
    got = [
        {
            "id": c.id,
            "title": c.title,
            "model": c.model,
            "messages": [[m.role, m.content, m.status, m.model] for m in s.messages(c.id)],
        }
        for c in s.conversations()
    ]
    assert got == written["conversations"]
    first, second = got
    assert first["title"] == "Kept across kernels"
    assert first["model"] == DEMO_TINY_REPO
    assert second["model"] == DEMO_TINY_B_REPO
    assert len(first["messages"]) == 4
    # The active conversation asks for its model again; the other shows it as requested.
    assert chat.requested_model == DEMO_TINY_REPO
    assert chat.wait_until_idle(120)
    rows = {r["id"]: r for r in chat.conversations}
    assert rows[second["id"]]["requested_model"] == DEMO_TINY_B_REPO
    assert chat.transcript["conversation_id"] == first["id"]
    assert [m["content"] for m in chat.transcript["messages"]] == [m[1] for m in first["messages"]]
    # And the chat goes on where it was.
    chat.send("Third question").wait(120)
    assert len(chat.messages) == 6


def test_a_kernel_killed_mid_reply_shows_it_interrupted_after_restore(
    restored: Callable[..., ChatWidget],
    local_hub: LocalHub,
    hf_cache: Path,
    history_file: Path,
    parrot_repo: str,
) -> None:
    proc = kernel("reply", local_hub, hf_cache, history_file, parrot_repo)
    assert proc.stdout is not None
    reports: list[dict[str, Any]] = []
    started: dict[str, Any] = {}
    enough = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            report = json.loads(line)
            if "message_id" in report:
                started.update(report)
                continue
            reports.append(report)
            # 2.5 s of streaming: checkpoints must have been written by now.
            if report["t"] - reports[0]["t"] >= 2.5 and report["chars"] > 0:
                enough.set()

    def wait_enough() -> bool:
        deadline = time.monotonic() + 240
        while not enough.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
        return True

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_enough(), proc.stderr.read() if proc.poll() is not None else "slow"
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.time()
    finally:
        proc.kill()
        proc.wait(30)
    reader.join(10)

    chat = restored(models=[parrot_repo])
    rows = chat.messages
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[1]["status"] == "done"
    last = rows[-1]
    assert last["id"] == started["message_id"]
    assert last["status"] == "interrupted"
    assert last["content"]
    # At most the last second (plus a commit) of text is lost.
    before = [r["chars"] for r in reports if r["t"] <= killed_at - 1.5]
    assert before, reports[:3]
    assert len(last["content"]) >= before[-1], (len(last["content"]), before[-1])
    # The model's context leaves the interrupted reply in (the user saw it), and a new turn
    # goes on after it.
    assert chat.session.store.history(chat.conversation_id)[-1]["content"] == last["content"]


def test_a_corrupt_file_is_moved_aside_with_a_visible_notice(
    restored: Callable[..., ChatWidget], tmp_path: Path
) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    chat = restored(history=path)
    assert chat.wait_until_idle(30)
    storage = chat.storage
    assert storage["path"] == str(path.resolve()) or storage["path"] == str(path)
    assert storage["notices"], storage
    moved = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert moved, list(tmp_path.iterdir())
    assert moved[0].read_bytes() == b"this is not a database" * 100
    assert any(moved[0].name in n for n in storage["notices"]), storage["notices"]


def test_a_locked_file_shows_a_warning_and_the_chat_goes_on(
    restored: Callable[..., ChatWidget], history_file: Path
) -> None:
    chat = restored()
    chat.select_model(DEMO_TINY_REPO)
    assert chat.wait_until_idle(120)
    chat.session.history.flush(10)
    holder = sqlite3.connect(history_file, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another kernel holds the write lock
    try:
        chat.rename_conversation(chat.conversation_id, "Renamed while locked")
        chat.send("Still chatting").wait(120)
        deadline = time.monotonic() + 60
        while (chat.storage.get("warning") or {}).get("kind") != "locked":
            assert time.monotonic() < deadline, chat.storage
            chat.wait_until_idle(1)
        warning = chat.storage["warning"]
        assert "lock" in warning["message"].lower()
        assert warning["pending_writes"] >= 1
        assert chat.messages[-1]["status"] == "done"  # in memory, the chat went on
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    chat.session.history.retry_now()
    deadline = time.monotonic() + 60
    while chat.storage.get("warning") is not None:
        assert time.monotonic() < deadline, chat.storage
        chat.wait_until_idle(1)
    assert chat.session.history.flush(10)
    rows = sqlite3.connect(history_file).execute("SELECT title FROM conversations").fetchall()
    assert ("Renamed while locked",) in rows


def test_workspaces_are_separate_and_listed(restored: Callable[..., ChatWidget]) -> None:
    a = restored(workspace="notebooks/a.ipynb")
    a.rename_conversation(a.conversation_id, "In A")
    a.session.history.flush(10)
    b = restored(workspace="notebooks/b.ipynb")
    assert [c.title for c in b.session.conversations()] != ["In A"]
    names = {w.name for w in b.workspaces()}
    assert {"notebooks/a.ipynb", "notebooks/b.ipynb"} <= names
    listed = b.list_conversations("notebooks/a.ipynb")
    assert [c.title for c in listed] == ["In A"]
    # A conversation open in another widget of this kernel is not opened twice.
    with pytest.raises(RuntimeError, match="open in another widget"):
        b.open_conversation(listed[0].id)
    a.close()
    b.open_conversation(listed[0].id)
    assert b.conversation_id == listed[0].id
    assert b.session.conversations()[-1].title == "In A"
