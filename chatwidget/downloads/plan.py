"""The hub's tree listing → a :class:`DownloadPlan` (what to fetch, disk and memory needed).

The memory figures are :mod:`chatwidget.fit`'s: with ``read_fit=True`` the listing also reads
``config.json`` and the safetensors headers from the hub (Range requests, no weights), so the
plan knows, before the first byte, what each precision option will need.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, get_cached_repo_tree
from huggingface_hub.errors import CachedRepoTreeNotFoundError
from huggingface_hub.hf_api import RepoFile

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.downloads import cache
from chatwidget.downloads.types import DownloadPlan, RemoteFile
from chatwidget.fit.facts import ModelFacts, read_config, shape_from_config, weights_from_summary
from chatwidget.fit.sources import remembered_commit

log = logging.getLogger("chatwidget.downloads.plan")

#: Seconds to wait for each listing request before the HTTP client gives up.
LISTING_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Listing:
    """What the hub says about a revision: its commit, the selected files, weight counts,
    and (when asked for) the fit facts read from its config and safetensors headers."""

    commit: str
    files: tuple[RemoteFile, ...]
    parameters: dict[str, int] = field(default_factory=dict)  # safetensors dtype -> count
    facts: ModelFacts | None = None


def fetch_listing(
    spec: ModelSpec,
    *,
    cache_dir: Path,
    endpoint: str | None,
    token: str | bool | None,
    read_fit: bool = False,
) -> Listing:
    """Resolve ``spec.revision`` to a commit and list the files ``spec`` selects.

    Network: one revision request, plus one tree request unless the listing of that commit is
    already cached. Raises huggingface_hub / HTTP errors unchanged (callers classify them).
    The listing is written to the cache so later offline completeness checks are exact.
    ``read_fit`` also reads ``config.json`` and the safetensors headers (Range requests; once
    per commit in this process, see :func:`chatwidget.fit.remembered`); their failures only
    make the estimate coarser.
    """
    api = HfApi(endpoint=endpoint, token=token)
    info = api.repo_info(spec.repo_id, revision=spec.revision, timeout=LISTING_TIMEOUT_S)
    commit = info.sha
    if not commit:
        raise ValueError(f"The hub returned no commit for {spec.repo_id}@{spec.revision}")
    try:
        entries = get_cached_repo_tree(spec.repo_id, revision=commit, cache_dir=cache_dir)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        entries = [
            f
            for f in api.list_repo_tree(spec.repo_id, recursive=True, revision=commit)
            if isinstance(f, RepoFile)
        ]
        _write_tree_cache(cache_dir, spec.repo_id, commit, entries)
    safetensors = getattr(info, "safetensors", None)
    parameters = dict(getattr(safetensors, "parameters", None) or {})
    files = select_files(entries, spec)
    facts = None
    if read_fit:
        facts = remembered_commit(cache_dir, spec.repo_id, commit) or fit.facts_from_hub(
            spec.repo_id,
            commit,
            [(f.path, f.size) for f in files],
            endpoint=endpoint,
            token=token,
            parameters=parameters,
        )
        fit.remember(cache_dir, spec.repo_id, spec.revision, facts)
    return Listing(commit, files, parameters, facts)


def select_files(entries: Iterable[RepoFile], spec: ModelSpec) -> tuple[RemoteFile, ...]:
    """Keep the files ``spec``'s patterns select, as :class:`RemoteFile` (sha256 for LFS files)."""
    by_path = {e.path: e for e in entries}
    chosen = sorted(cache.select(by_path, spec))
    return tuple(_remote_file(by_path[path]) for path in chosen)


def _remote_file(entry: RepoFile) -> RemoteFile:
    lfs = entry.lfs
    return RemoteFile(path=entry.path, size=int(entry.size), sha256=lfs.sha256 if lfs else None)


def build_plan(spec: ModelSpec, listing: Listing, *, cache_dir: Path) -> DownloadPlan:
    """Mark what is cached already and add up disk and memory needs.

    Memory comes from the listing's fit facts when it read them, else (no network) from the
    hub's parameter counts and a cached ``config.json``. Raises PrecisionUnavailableError
    when ``spec`` asks for a quantization its checkpoint cannot take.
    """
    snapshot = cache.snapshot_folder(cache_dir, spec.repo_id, listing.commit)
    marked = cache.mark_cached(snapshot, listing.files)
    total = sum(f.size for f in marked)
    missing = sum(f.size for f in marked if not f.cached)
    facts = listing.facts or _facts_without_network(spec, listing, snapshot)
    model = fit.estimate(facts)
    option = model.for_spec(spec)
    return DownloadPlan(
        repo_id=spec.repo_id,
        revision=spec.revision,
        commit=listing.commit,
        files=marked,
        total_bytes=total,
        missing_bytes=missing,
        disk_free_bytes=cache.free_disk(cache_dir),
        memory_estimate_bytes=option.model_bytes,
        parameters=facts.weights.parameters or None,
        load_dtype=option.dtype,
        fit=model,
    )


def _facts_without_network(spec: ModelSpec, listing: Listing, snapshot: Path) -> ModelFacts:
    """Fit facts from what is at hand: the hub's parameter counts, a cached config.json."""
    config = read_config(snapshot / "config.json")
    shape = shape_from_config(config) if config is not None else None
    weights_files = sum(f.size for f in listing.files if f.path.endswith(".safetensors"))
    weights = weights_from_summary(listing.parameters, weights_files, shape)
    return ModelFacts(spec.repo_id, weights, shape, commit=listing.commit)


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
