"""Value types the downloader hands to its callers (the orchestrator, the widget)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatwidget.fit import ModelEstimate


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo as the hub's tree listing describes it."""

    path: str
    size: int
    sha256: str | None = None  # LFS files carry one
    cached: bool = False


@dataclass(frozen=True)
class DownloadPlan:
    """What a download would fetch, known before the first byte."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]
    total_bytes: int  # all selected files
    missing_bytes: int  # not yet in the cache
    disk_free_bytes: int
    memory_estimate_bytes: int  # what the spec's precision needs loaded (chatwidget.fit)
    parameters: int | None = None  # weight count, from the safetensors headers
    load_dtype: str | None = None  # torch dtype the estimate loads floats in ("auto" resolved)
    fit: ModelEstimate | None = None  # every precision option's needs, for the selector

    @property
    def fits_on_disk(self) -> bool:
        return self.missing_bytes <= self.disk_free_bytes


@dataclass(frozen=True)
class DownloadProgress:
    """A progress update for one repo; ``final`` is set on the last one."""

    repo_id: str
    bytes_done: int
    bytes_total: int
    file: str = ""
    file_bytes_done: int = 0
    file_bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    speed_bps: float = 0.0  # smoothed
    eta_s: float | None = None
    final: bool = False


@dataclass(frozen=True)
class CachedModel:
    """A repo that is fully downloaded in the HF cache."""

    repo_id: str
    commit: str
    snapshot_path: Path
    size_on_disk: int
    refs: tuple[str, ...] = ()
