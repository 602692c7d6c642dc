"""Where the history file lives, and which workspace a kernel's conversations belong to.

- :func:`default_path`: ``$CHATWIDGET_HISTORY`` if set, else ``chatwidget/history.sqlite3``
  in the user data folder (``platformdirs.user_data_path``).
- :func:`default_workspace`: the notebook's path where the kernel knows it
  (``JPY_SESSION_NAME``, set by Jupyter Server for the kernels it starts; VS Code's
  ``__vsc_ipynb_file__``), else ``"default"``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

#: Environment variable naming the history file; overrides the user data folder.
HISTORY_ENV = "CHATWIDGET_HISTORY"
DEFAULT_WORKSPACE = "default"


def default_path() -> Path:
    """The history file to use when none is given."""
    env = os.environ.get(HISTORY_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return platformdirs.user_data_path("chatwidget", appauthor=False) / "history.sqlite3"


def default_workspace() -> str:
    """The workspace key for this kernel: the notebook's path if known, else ``"default"``."""
    name = os.environ.get("JPY_SESSION_NAME", "").strip()
    if name:
        return name
    vscode = _ipython_user_variable("__vsc_ipynb_file__")
    if vscode:
        return vscode
    return DEFAULT_WORKSPACE


def _ipython_user_variable(name: str) -> str | None:
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:  # not in an IPython kernel: nothing to ask
        return None
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    user_ns = getattr(shell, "user_ns", None)
    value = user_ns.get(name) if isinstance(user_ns, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()
