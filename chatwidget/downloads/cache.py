"""The HF cache seen from the downloader: what is complete, cleanup after a kill, deletion.

Everything here works offline on the standard cache layout
(``models--org--name/{refs,blobs,snapshots}``), so it also sees models that other tools
(``snapshot_download``, transformers) put there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path

from filelock import FileLock, Timeout
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_cached_repo_tree, scan_cache_dir
from huggingface_hub.errors import CachedRepoTreeNotFoundError, CacheNotFound

from chatwidget.catalog import ModelSpec, validate_repo_id
from chatwidget.downloads.types import CachedModel, RemoteFile
from chatwidget.errors import InvalidRepoIdError

log = logging.getLogger("chatwidget.downloads.cache")

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Partial downloads are ``blobs/<etag>.<8 hex>.incomplete`` (older: ``<etag>.incomplete``).
_INCOMPLETE = re.compile(r"^(?P<etag>[^.]+)(?:\.[0-9a-f]{8})?\.incomplete$")


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The hub cache folder: ``cache_dir`` or huggingface_hub's default (``HF_HUB_CACHE``)."""
    return Path(cache_dir if cache_dir is not None else hf_constants.HF_HUB_CACHE).expanduser()


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    """``<cache>/models--org--name``."""
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def resolve_commit(cache_dir: Path, repo_id: str, revision: str) -> str | None:
    """The commit a revision points to in the cache (no network), or None if unknown."""
    if _COMMIT.match(revision):
        return revision
    ref = repo_folder(cache_dir, repo_id) / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def write_ref(cache_dir: Path, repo_id: str, revision: str, commit: str) -> None:
    """Record that ``revision`` (a branch or tag) points at ``commit``, atomically."""
    if _COMMIT.match(revision):
        return
    ref = repo_folder(cache_dir, repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit, encoding="utf-8")
    tmp.replace(ref)


def snapshot_folder(cache_dir: Path, repo_id: str, commit: str) -> Path:
    return repo_folder(cache_dir, repo_id) / "snapshots" / commit


def cached_size(snapshot: Path, path: str) -> int | None:
    """Size of the file ``path`` in a snapshot if its pointer resolves to a blob, else None."""
    try:
        return (snapshot / path).stat().st_size  # follows the symlink
    except OSError:
        return None


def mark_cached(snapshot: Path, files: Iterable[RemoteFile]) -> tuple[RemoteFile, ...]:
    """Return ``files`` with ``cached`` set for those already in the snapshot at full size."""
    return tuple(
        RemoteFile(f.path, f.size, f.sha256, cached=cached_size(snapshot, f.path) == f.size)
        for f in files
    )


def select(paths: Iterable[str], spec: ModelSpec) -> list[str]:
    """The paths that ``spec``'s allow/ignore patterns keep (``snapshot_download``'s rules)."""
    allow = [_pattern(p) for p in spec.allow_patterns]
    ignore = [_pattern(p) for p in spec.ignore_patterns]
    return [
        path
        for path in paths
        if (not allow or any(fnmatchcase(path, p) for p in allow))
        and not any(fnmatchcase(path, p) for p in ignore)
    ]


def _pattern(pattern: str) -> str:
    """Same rule as huggingface_hub: a pattern ending in '/' means everything in that folder."""
    return pattern + "*" if pattern.endswith("/") else pattern


def complete_snapshot(cache_dir: Path, spec: ModelSpec) -> Path | None:
    """The snapshot folder if everything ``spec`` needs to load is cached, else None. Offline.

    With a cached tree listing (written by ``snapshot_download`` and by this downloader), every
    selected file must be present at its listed size. Without one (a model fetched file by file
    by another tool), the model is complete when it has a config, a tokenizer and all the
    safetensors weights its index names.
    """
    commit = resolve_commit(cache_dir, spec.repo_id, spec.revision)
    if commit is None:
        return None
    snapshot = snapshot_folder(cache_dir, spec.repo_id, commit)
    if not snapshot.is_dir():
        return None
    try:
        listing = get_cached_repo_tree(spec.repo_id, revision=commit, cache_dir=cache_dir)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        listing = None
    if listing is not None:
        sizes = {f.path: f.size for f in listing}
        wanted = select(sizes, spec)
        if not wanted:
            return None
        ok = all(cached_size(snapshot, path) == sizes[path] for path in wanted)
        return snapshot if ok else None
    return snapshot if _looks_loadable(snapshot) else None


def _looks_loadable(snapshot: Path) -> bool:
    """Heuristic completeness check for snapshots without a cached tree listing."""
    if cached_size(snapshot, "config.json") is None:
        return False
    tokenizer = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if not any(cached_size(snapshot, name) is not None for name in tokenizer):
        return False
    index = snapshot / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        shards = set(weight_map.values()) if isinstance(weight_map, dict) else set()
        return bool(shards) and all(cached_size(snapshot, str(s)) is not None for s in shards)
    return any(p.exists() for p in snapshot.glob("*.safetensors"))


def remove_incomplete(cache_dir: Path, repo_id: str) -> list[Path]:
    """Delete ``.incomplete`` blobs of ``repo_id`` that no live download is writing.

    huggingface_hub holds ``.locks/<repo folder>/<etag>.lock`` while it writes
    ``blobs/<etag>.*.incomplete``; a file whose lock can be taken at once is an orphan (its
    writer was killed), so it is removed. Returns the removed paths.
    """
    folder = repo_folder(cache_dir, repo_id)
    blobs = folder / "blobs"
    locks = cache_dir / ".locks" / folder.name
    removed: list[Path] = []
    if not blobs.is_dir():
        return removed
    for path in blobs.iterdir():
        match = _INCOMPLETE.match(path.name)
        if match is None:
            continue
        lock_path = locks / f"{match['etag']}.lock"
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(lock_path), timeout=0):
                path.unlink(missing_ok=True)
        except Timeout:
            log.debug("Leaving %s: another download holds its lock", path)
            continue
        except OSError as exc:
            log.warning("Could not remove the partial download %s: %s", path, exc)
            continue
        removed.append(path)
    return removed


def remove_all_incomplete(cache_dir: Path) -> list[Path]:
    """:func:`remove_incomplete` for every model repo in the cache (at start-up: what dead
    processes left behind). Offline and cheap: it only lists ``models--*/blobs``."""
    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    for folder in sorted(cache_dir.glob("models--*")):
        blobs = folder / "blobs"
        if not blobs.is_dir() or not any(_INCOMPLETE.match(p.name) for p in blobs.iterdir()):
            continue
        repo_id = folder.name.removeprefix("models--").replace("--", "/", 1)
        removed += remove_incomplete(cache_dir, repo_id)
    return removed


def remove_dangling_links(cache_dir: Path, repo_id: str) -> list[Path]:
    """Delete snapshot entries of ``repo_id`` that point at missing blobs. Returns them."""
    snapshots = repo_folder(cache_dir, repo_id) / "snapshots"
    removed: list[Path] = []
    if not snapshots.is_dir():
        return removed
    for root, _dirs, names in os.walk(snapshots):
        for name in names:
            entry = Path(root) / name
            if entry.is_symlink() and not entry.exists():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def remove_file(snapshot: Path, path: str) -> None:
    """Delete one snapshot entry and the blob it points to (used for corrupted files)."""
    entry = snapshot / path
    try:
        blob = entry.resolve(strict=True) if entry.is_symlink() else None
    except OSError:
        blob = None
    entry.unlink(missing_ok=True)
    if blob is not None:
        blob.unlink(missing_ok=True)


def free_disk(cache_dir: Path) -> int:
    """Free bytes on the disk that holds ``cache_dir`` (or its nearest existing parent)."""
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def cached_models(cache_dir: Path) -> list[CachedModel]:
    """Fully downloaded model revisions in the cache, with their size on disk. Offline."""
    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    models: list[CachedModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        try:
            validate_repo_id(repo.repo_id)
        except InvalidRepoIdError:
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            spec = ModelSpec(repo.repo_id, revision=revision.commit_hash)
            if complete_snapshot(cache_dir, spec) is None:
                continue
            models.append(
                CachedModel(
                    repo_id=repo.repo_id,
                    commit=revision.commit_hash,
                    snapshot_path=Path(revision.snapshot_path),
                    size_on_disk=revision.size_on_disk,
                    refs=tuple(sorted(revision.refs)),
                )
            )
    return models


def delete_repo(cache_dir: Path, repo_id: str) -> int:
    """Remove a repo's whole cache folder (all revisions, refs, partial files). Bytes freed."""
    folder = repo_folder(cache_dir, repo_id)
    if not folder.is_dir():
        return 0
    freed = _bytes_on_disk(folder)
    shutil.rmtree(folder)
    shutil.rmtree(cache_dir / ".locks" / folder.name, ignore_errors=True)
    log.info("Deleted %s from the cache (%d bytes)", repo_id, freed)
    return freed


def _bytes_on_disk(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                st = (Path(root) / name).lstat()
            except OSError:
                continue
            if not (Path(root) / name).is_symlink():
                total += st.st_size
    return total


def size_by_path(files: Iterable[RemoteFile]) -> Mapping[str, int]:
    return {f.path: f.size for f in files}
