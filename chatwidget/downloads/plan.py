"""The hub's tree listing → a :class:`DownloadPlan` (what to fetch, disk and memory needed)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, get_cached_repo_tree
from huggingface_hub.errors import CachedRepoTreeNotFoundError
from huggingface_hub.hf_api import RepoFile

from chatwidget.catalog import ModelSpec
from chatwidget.downloads import cache, validate
from chatwidget.downloads.types import DownloadPlan, RemoteFile

log = logging.getLogger("chatwidget.downloads.plan")

#: Seconds to wait for each listing request before the HTTP client gives up.
LISTING_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Listing:
    """What the hub says about a revision: its commit, the selected files, weight counts."""

    commit: str
    files: tuple[RemoteFile, ...]
    parameters: dict[str, int] = field(default_factory=dict)  # safetensors dtype -> count


def fetch_listing(
    spec: ModelSpec, *, cache_dir: Path, endpoint: str | None, token: str | bool | None
) -> Listing:
    """Resolve ``spec.revision`` to a commit and list the files ``spec`` selects.

    Network: one revision request, plus one tree request unless the listing of that commit is
    already cached. Raises huggingface_hub / HTTP errors unchanged (callers classify them), and
    UnsafeRepoError for a malformed commit id or a file name that could escape the cache.
    The listing is written to the cache so later offline completeness checks are exact.
    """
    api = HfApi(endpoint=endpoint, token=token)
    info = api.repo_info(spec.repo_id, revision=spec.revision, timeout=LISTING_TIMEOUT_S)
    # the commit becomes a folder name and the paths file names in the cache: refuse anything
    # that could land outside it, before any request for files
    commit = validate.check_commit(spec.repo_id, info.sha)
    fresh = False
    try:
        entries = _cached_tree(cache_dir, spec.repo_id, commit)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        entries = [
            f
            for f in api.list_repo_tree(spec.repo_id, recursive=True, revision=commit)
            if isinstance(f, RepoFile)
        ]
        fresh = True
    validate.check_paths(spec.repo_id, (e.path for e in entries))
    if fresh:
        _write_tree_cache(cache_dir, spec.repo_id, commit, entries)
    safetensors = getattr(info, "safetensors", None)
    parameters = dict(getattr(safetensors, "parameters", None) or {})
    return Listing(commit, select_files(entries, spec), parameters)


def _cached_tree(cache_dir: Path, repo_id: str, commit: str) -> list[RepoFile]:
    """The cached listing of ``commit``, with the sha256 of LFS files kept.

    ``get_cached_repo_tree`` drops the LFS part, so a second download of a listed repo could
    neither verify its weights nor find another process's lock on them; huggingface_hub's
    own reader keeps it. Raises CachedRepoTreeNotFoundError when nothing is cached.
    """
    try:
        from huggingface_hub._tree_cache import read_tree_cache
    except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
        return get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir)
    found = read_tree_cache(str(cache.repo_folder(cache_dir, repo_id)), commit)
    if found is None:
        return get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir)
    return [
        RepoFile(  # type: ignore[no-untyped-call]
            path=path,
            size=entry.size,
            oid=entry.blob_id,
            xetHash=entry.xet_hash,
            lfs={"size": entry.lfs_size or entry.size, "oid": entry.lfs_sha256, "pointerSize": 0}
            if entry.lfs_sha256
            else None,
        )
        for path, entry in found.items()
    ]


def select_files(entries: Iterable[RepoFile], spec: ModelSpec) -> tuple[RemoteFile, ...]:
    """Keep the files ``spec``'s patterns select, as :class:`RemoteFile` (sha256 for LFS files)."""
    by_path = {e.path: e for e in entries}
    chosen = sorted(cache.select(by_path, spec))
    return tuple(_remote_file(by_path[path]) for path in chosen)


def _remote_file(entry: RepoFile) -> RemoteFile:
    lfs = entry.lfs
    return RemoteFile(path=entry.path, size=int(entry.size), sha256=lfs.sha256 if lfs else None)


def build_plan(spec: ModelSpec, listing: Listing, *, cache_dir: Path) -> DownloadPlan:
    """Mark what is cached already and add up disk and memory needs."""
    snapshot = cache.snapshot_folder(cache_dir, spec.repo_id, listing.commit)
    marked = cache.mark_cached(snapshot, listing.files)
    total = sum(f.size for f in marked)
    missing = sum(f.size for f in marked if not f.cached)
    config_dtype = _config_dtype(snapshot / "config.json")
    memory, dtype = estimate_memory(marked, listing.parameters, config_dtype)
    return DownloadPlan(
        repo_id=spec.repo_id,
        revision=spec.revision,
        commit=listing.commit,
        files=marked,
        total_bytes=total,
        missing_bytes=missing,
        disk_free_bytes=cache.free_disk(cache_dir),
        memory_estimate_bytes=memory,
        parameters=sum(listing.parameters.values()) or None,
        load_dtype=dtype,
    )


#: Bytes per element of safetensors dtypes and of config ``dtype`` / ``torch_dtype`` names.
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float": 4, "half": 2,
}  # fmt: skip


def estimate_memory(
    files: Iterable[RemoteFile], parameters: dict[str, int], config_dtype: str | None
) -> tuple[int, str | None]:
    """Bytes the weights take once loaded, and the dtype that assumes.

    The engine loads with ``dtype="auto"``: the config's dtype when it names one, else the
    dtype the weights were saved in. With the hub's parameter counts the estimate is
    ``count x element size``; without them it is the size of the safetensors files.
    """
    known = {d: n for d, n in parameters.items() if d in _DTYPE_BYTES}
    if known and config_dtype in _DTYPE_BYTES:
        return sum(known.values()) * _DTYPE_BYTES[config_dtype], config_dtype
    if known:
        stored = max(known, key=lambda d: known[d])
        return sum(n * _DTYPE_BYTES[d] for d, n in known.items()), stored
    weights = sum(f.size for f in files if f.path.endswith(".safetensors"))
    return weights, None


def _config_dtype(config: Path) -> str | None:
    """``dtype`` (or the older ``torch_dtype``) of a cached config.json, if any."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("dtype") or data.get("torch_dtype")
    return value if isinstance(value, str) else None


def _write_tree_cache(cache_dir: Path, repo_id: str, commit: str, entries: list[RepoFile]) -> None:
    """Store the listing where huggingface_hub keeps it (``trees/<commit>.json``).

    Best effort: it uses huggingface_hub's own writer, which is not public API; if that
    moves, completeness checks fall back to a heuristic and downloads still work.
    """
    try:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
        log.debug("huggingface_hub has no tree cache writer; skipping")
        return
    folder = cache.repo_folder(cache_dir, repo_id)
    write_tree_cache(
        str(folder),
        commit,
        {
            e.path: TreeCacheEntry(
                size=int(e.size),
                blob_id=e.blob_id,
                lfs_sha256=e.lfs.sha256 if e.lfs is not None else None,
                lfs_size=e.lfs.size if e.lfs is not None else None,
                xet_hash=e.xet_hash,
            )
            for e in entries
        },
    )
