"""What a failed write means: a warning kind, the words the user reads, a file moved aside.

:func:`classify` maps an ``sqlite3`` or ``OSError`` to a
:data:`~chatwidget.history.types.WarningKind` (looking at the folder for the open and I/O
errors SQLite reports vaguely), :func:`is_corrupt` tells a damaged file, and
:func:`move_aside` renames one (never deletes it).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from contextlib import suppress
from pathlib import Path

from chatwidget.history.schema import SCHEMA_VERSION, ForeignDatabaseError
from chatwidget.history.types import WarningKind

_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class NewerSchemaError(sqlite3.DatabaseError):
    """The file was written by a newer chatwidget (its schema version is above ours)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"schema version {version}")
        self.version = version


def warning_message(kind: WarningKind, detail: str, path: Path, busy_timeout: float) -> str:
    """What the user reads for a warning of this kind."""
    where = str(path)
    later = "The chat goes on in memory; changes will be saved"
    match kind:
        case "locked":
            return (
                f"The history file {where} is locked by another program (waited "
                f"{busy_timeout:g} s). {later} when it is free."
            )
        case "read_only":
            return f"The history file {where} cannot be written ({detail}). {later} once it can."
        case "disk_full":
            return (
                f"The disk holding the history file {where} is full. {later} once space is freed."
            )
        case "newer_schema":
            return (
                f"The history file {where} was written by a newer chatwidget ({detail}; this "
                f"one knows up to {SCHEMA_VERSION}). It is left untouched: this session's "
                "conversations are kept in memory only. Update chatwidget to save them."
            )
        case "foreign":
            return (
                f"{where} is not a chatwidget history file ({detail}). It is left untouched: "
                "this session's conversations are kept in memory only. Pass another file "
                "with history=PATH."
            )
        case _:
            return f"The history file {where} cannot be written ({detail}). {later} on retry."


def is_corrupt(exc: BaseException) -> bool:
    if isinstance(exc, (ForeignDatabaseError, NewerSchemaError)):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(_CORRUPT)


def classify(exc: BaseException, path: Path) -> tuple[WarningKind, str]:
    """What a failed write means for the user: a warning kind and a short detail."""
    if isinstance(exc, NewerSchemaError):
        return "newer_schema", str(exc)
    if isinstance(exc, ForeignDatabaseError):
        return "foreign", str(exc)
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return "locked", str(exc)
        if name.startswith("SQLITE_READONLY"):
            return "read_only", str(exc)
        if name == "SQLITE_FULL":
            return "disk_full", str(exc)
    elif isinstance(exc, OSError):
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return "read_only", exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "disk_full", exc.strerror or str(exc)
    # An open or I/O error: look at the folder to say why.
    folder = path.parent
    if read_only_fs(folder):
        return "read_only", "the file system is read-only"
    with suppress(OSError):
        if os.statvfs(folder).f_bavail == 0:
            return "disk_full", "no space left"
    return "unavailable", str(exc)


def read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def move_aside(path: Path) -> Path:
    """Rename a damaged file (and its -wal/-shm) to ``<name>.corrupt-<time>``; never delete."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    if path.exists():
        path.replace(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(target.with_name(target.name + suffix))
    return target
