"""Hooks for the whole run, notebooks included (``tests/conftest.py`` covers ``tests/`` only).

Every kernel nbval starts for a notebook under ``notebooks/`` gets a history file of its own
(``CHATWIDGET_HISTORY``), so a notebook starts with no conversations, as on a first run,
and nothing is written to the user's own history.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HISTORIES = Path(tempfile.mkdtemp(prefix="chatwidget-notebook-history-"))
atexit.register(shutil.rmtree, _HISTORIES, ignore_errors=True)
os.environ.setdefault("CHATWIDGET_HISTORY", str(_HISTORIES / "history.sqlite3"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a notebook's kernel starts (its first cell's setup), point it at a new file."""
    notebook = item.parent
    if notebook is None or not str(notebook.path).endswith(".ipynb"):
        return
    path = _HISTORIES / f"{notebook.path.stem}.sqlite3"
    if os.environ.get("CHATWIDGET_HISTORY") != str(path):
        os.environ["CHATWIDGET_HISTORY"] = str(path)
