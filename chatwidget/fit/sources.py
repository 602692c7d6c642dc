"""Where :class:`ModelFacts` come from: the cached files, or the hub before a download.

- :func:`facts_from_files`: a cached snapshot's ``config.json`` and safetensors headers
  (a few kilobytes read, no weights).
- :func:`facts_from_hub`: ``config.json`` and each safetensors header fetched with HTTP Range
  requests, as ``huggingface_hub``'s ``get_safetensors_metadata`` does (it is what reads
  them: :meth:`HfApi.parse_safetensors_file_metadata`), so nothing of the weights is fetched.
  When a header cannot be read the hub's per-dtype parameter counts stand in, then the
  files' sizes; the facts' ``source`` says which.

Facts are remembered per cache, repo and revision for the life of the process
(:func:`remembered`), so the engine's fit check before a download uses the same figures as
the plan that fetched them, and a second plan of the same commit reads nothing again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chatwidget.fit.facts import (
    SOURCE_FILE_SIZES,
    ModelFacts,
    Tensor,
    Weights,
    read_config,
    read_header,
    shape_from_config,
    tensors_of,
    weights_from_summary,
    weights_of,
)

log = logging.getLogger("chatwidget.fit.sources")

#: Seconds each metadata request may wait for the server before it counts as failed.
HUB_TIMEOUT_S = 10.0
#: The index of a sharded checkpoint: the files it names are the ones transformers loads.
SAFETENSORS_INDEX = "model.safetensors.index.json"
#: Headers read at once for a sharded model.
MAX_PARALLEL_HEADERS = 8


def facts_from_files(
    repo_id: str,
    config_path: Path | None,
    weight_files: Sequence[Path],
    *,
    commit: str | None = None,
) -> ModelFacts:
    """Facts of a model on disk: its config and the headers of its safetensors files.

    Pickle checkpoints (opt-in only) have no header: their file size stands for the weights.
    Raises ValueError for a malformed safetensors header.
    """
    config = read_config(config_path) if config_path is not None else None
    shape = shape_from_config(config) if config is not None else None
    file_bytes = sum(p.stat().st_size for p in weight_files)
    notes: list[str] = []
    if all(p.suffix == ".safetensors" for p in weight_files):
        tensors: list[Tensor] = []
        for path in weight_files:
            tensors.extend(tensors_of(read_header(path)))
        weights = weights_of(tensors, file_bytes)
    else:
        weights = Weights({}, 0, file_bytes, SOURCE_FILE_SIZES)
        notes.append("pickle weights have no header: their file size stands for them.")
    return ModelFacts(repo_id, weights, shape, commit=commit, notes=tuple(notes))


def facts_from_hub(
    repo_id: str,
    commit: str,
    files: Sequence[tuple[str, int]],
    *,
    endpoint: str | None,
    token: str | bool | None,
    parameters: Mapping[str, int] | None = None,
    timeout_s: float = HUB_TIMEOUT_S,
) -> ModelFacts:
    """Facts of a model on the hub, before its weights are downloaded.

    ``files`` are the (path, size) of the files a download would fetch; ``parameters`` the
    hub's per-dtype counts from the repo info (the fallback when headers cannot be read).
    Network: one GET of ``config.json`` (and of the shard index, if any) and one or two Range
    GETs per safetensors file the index names.
    Failures are logged and degrade the facts (``weights.source``, ``notes``); nothing raises.
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    notes: list[str] = []
    config = _hub_json(
        api.endpoint, token, repo_id, commit, "config.json", timeout_s=timeout_s, notes=notes
    )
    shape = shape_from_config(config) if config is not None else None
    weight_files = [(p, s) for p, s in files if p.endswith(".safetensors") and "/" not in p]
    if any(p == SAFETENSORS_INDEX for p, _s in files):
        # transformers loads what the index names (not, say, a consolidated.safetensors beside)
        index = _hub_json(
            api.endpoint,
            token,
            repo_id,
            commit,
            SAFETENSORS_INDEX,
            timeout_s=timeout_s,
            notes=notes,
        )
        named = _indexed_files(index)
        if named:
            weight_files = [(p, s) for p, s in weight_files if p in named]
    file_bytes = sum(size for _path, size in weight_files)
    try:
        tensors = _hub_tensors(api, repo_id, commit, [p for p, _s in weight_files], timeout_s)
        weights = weights_of(tensors, file_bytes)
    except Exception as exc:  # any transport or parsing failure: fall back, never fail a plan
        log.warning("reading the safetensors headers of %s failed: %s", repo_id, exc)
        if parameters:
            weights = weights_from_summary(parameters, file_bytes, shape)
        else:
            weights = Weights({}, 0, file_bytes, SOURCE_FILE_SIZES)
        notes.append(f"the safetensors headers could not be read ({type(exc).__name__}).")
    return ModelFacts(repo_id, weights, shape, commit=commit, notes=tuple(notes))


def _hub_json(
    endpoint: str,
    token: str | bool | None,
    repo_id: str,
    commit: str,
    filename: str,
    *,
    timeout_s: float,
    notes: list[str],
) -> dict[str, Any] | None:
    """A small JSON file of the repo (config, index), or None (logged, noted) on failure."""
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url = hf_hub_url(repo_id, filename, revision=commit, endpoint=endpoint)
    try:
        headers = build_hf_headers(token=token)
        response = get_session().get(url, headers=headers, timeout=timeout_s)
        hf_raise_for_status(response)
        data = response.json()
    except Exception as exc:
        log.warning("reading %s of %s failed: %s", filename, repo_id, exc)
        notes.append(f"{filename} could not be read ({type(exc).__name__}).")
        return None
    return data if isinstance(data, dict) else None


def _indexed_files(index: Mapping[str, Any] | None) -> set[str]:
    """The shard names a safetensors index maps tensors to (empty when unusable)."""
    weight_map = index.get("weight_map") if index is not None else None
    if not isinstance(weight_map, dict):
        return set()
    return {str(name) for name in weight_map.values()}


def _hub_tensors(
    api: Any, repo_id: str, commit: str, paths: Sequence[str], timeout_s: float
) -> list[Tensor]:
    if not paths:
        return []

    def header(path: str) -> list[Tensor]:
        meta = api.parse_safetensors_file_metadata(
            repo_id, path, revision=commit, timeout=timeout_s
        )
        return [Tensor(name, info.dtype, tuple(info.shape)) for name, info in meta.tensors.items()]

    workers = min(MAX_PARALLEL_HEADERS, len(paths))
    with ThreadPoolExecutor(workers, thread_name_prefix="chatwidget-fit-header") as pool:
        return [t for tensors in pool.map(header, paths) for t in tensors]


# --- facts learned in this process ----------------------------------------------------------

_lock = threading.Lock()
_remembered: dict[tuple[str, str, str], ModelFacts] = {}
#: Models remembered at most; the oldest is forgotten first.
MAX_REMEMBERED = 256


def _key(cache_dir: str | Path | None, repo_id: str, revision: str) -> tuple[str, str, str]:
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    return (str(Path(cache_dir).expanduser().resolve()), repo_id, revision)


def remember(cache_dir: str | Path | None, repo_id: str, revision: str, facts: ModelFacts) -> None:
    """Keep the facts a plan learned about ``repo_id@revision`` for this cache."""
    key = _key(cache_dir, repo_id, revision)
    with _lock:
        _remembered.pop(key, None)
        _remembered[key] = facts
        while len(_remembered) > MAX_REMEMBERED:
            _remembered.pop(next(iter(_remembered)))


def remembered(cache_dir: str | Path | None, repo_id: str, revision: str) -> ModelFacts | None:
    """The facts last learned about ``repo_id@revision`` for this cache, if any."""
    with _lock:
        return _remembered.get(_key(cache_dir, repo_id, revision))


def remembered_commit(cache_dir: str | Path | None, repo_id: str, commit: str) -> ModelFacts | None:
    """Remembered facts of exactly ``commit`` (under any revision name), if any."""
    cache = _key(cache_dir, repo_id, "")[0]
    with _lock:
        for (where, repo, _rev), facts in reversed(_remembered.items()):
            if where == cache and repo == repo_id and facts.commit == commit:
                return facts
    return None
