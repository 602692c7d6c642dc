"""What the session keeps in its history besides messages: settings, and the storage status.

- :func:`saved_settings` / :func:`settings_record`: generation settings as a history setting
  (one JSON value under :data:`SETTINGS_KEY`), read back leniently: a value this version no
  longer accepts falls back to the default instead of failing the restore.
- :func:`storage_state`: the history file's state as the widget shows it (trait
  ``storage``): where it is, and the warning that stops saving, if any.
"""

from __future__ import annotations

import logging
from typing import Any

from chatwidget.engine.types import GenerationSettings
from chatwidget.history import History
from chatwidget.session.settings import SETTING_NAMES, settings_dict, settings_from

log = logging.getLogger("chatwidget.session")

#: The history setting that holds the generation settings of a workspace.
SETTINGS_KEY = "chatwidget.generation"


def settings_record(settings: GenerationSettings) -> dict[str, Any]:
    """The settings change to save."""
    return {SETTINGS_KEY: settings_dict(settings)}


def saved_settings(history: History) -> GenerationSettings:
    """The workspace's saved generation settings (defaults for anything missing or invalid)."""
    stored = history.settings().get(SETTINGS_KEY)
    settings = GenerationSettings()
    if not isinstance(stored, dict):
        return settings
    for name in SETTING_NAMES:  # one at a time: a bad value costs only itself
        if name in stored:
            try:
                settings = settings_from(settings, {name: stored[name]})
            except ValueError as exc:
                log.info("Saved setting %s not restored: %s", name, exc)
    return settings


def storage_state(history: History) -> dict[str, Any]:
    """Trait ``storage``: the file, the workspace, the standing warning and one-off notices."""
    warning = history.warning
    return {
        "path": None if history.path is None else str(history.path),
        "workspace": history.workspace,
        "warning": None
        if warning is None
        else {
            "kind": warning.kind,
            "message": warning.message,
            "pending_writes": warning.pending_writes,
            "moved_to": warning.moved_to,
        },
        "notices": [n.message for n in history.notices],
    }
