"""Model downloads into the Hugging Face cache, in a child process, with progress and cancel."""

from __future__ import annotations

from chatwidget.downloads.downloader import Downloader
from chatwidget.downloads.types import CachedModel, DownloadPlan, DownloadProgress, RemoteFile

__all__ = ["CachedModel", "DownloadPlan", "DownloadProgress", "Downloader", "RemoteFile"]
