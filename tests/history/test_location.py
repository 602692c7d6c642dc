"""Where the history file lives and which workspace a kernel uses."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from chatwidget.history import HISTORY_ENV, default_path, default_workspace


def test_the_environment_variable_names_the_file(
    history_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert default_path() == history_file  # the autouse fixture: never the real user dir
    monkeypatch.setenv(HISTORY_ENV, str(tmp_path / "elsewhere.sqlite3"))
    assert default_path() == tmp_path / "elsewhere.sqlite3"


def test_without_the_variable_the_file_is_in_the_user_data_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HISTORY_ENV)
    expected = platformdirs.user_data_path("chatwidget", appauthor=False) / "history.sqlite3"
    assert default_path() == expected  # only computed: nothing is created here


def test_the_workspace_is_the_notebook_path_where_the_kernel_knows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/analysis.ipynb")
    assert default_workspace() == "/home/me/analysis.ipynb"
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert default_workspace() == "default"
