"""Refuse what a hostile or broken hub serves, before any weights are downloaded.

- a listing with file names that would land outside the cache (``../x``, ``/etc/x``, ``a\\b``);
- a commit id that is not 40 hex digits (it becomes a folder name in the cache);
- a ``config.json`` that does not describe the weights next to it: another vocabulary or
  hidden size than the embedding, another layer count, or far more parameters than the
  weights hold (transformers builds the model from the config, so a config asking for
  10⁹ parameters beside tiny weights would allocate gigabytes at load time).

The checks read only the listing, the config and the safetensors headers (a few kilobytes
through HTTP range requests), never torch; the download process runs them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from chatwidget.errors import UnsafeRepoError

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: File names longer than this are refused (real repos stay far below).
MAX_PATH_CHARS = 1024
#: The largest config.json accepted (real ones are a few kilobytes).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: Config sizes beyond these are not a language model anyone can load.
MAX_VOCAB = 10_000_000
MAX_HIDDEN = 1_000_000
MAX_LAYERS = 10_000
MAX_INNER = 10_000_000
MAX_HEADS = 100_000
#: A config may describe at most this many times the parameters its weights hold.
MAX_PARAMETER_RATIO = 4.0

_EMBEDDING_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "embed_in.weight",
    "tok_embeddings.weight",
)
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def check_commit(repo_id: str, commit: object) -> str:
    """``commit`` if it is a 40-hex commit id, else UnsafeRepoError."""
    if not isinstance(commit, str) or not _COMMIT.match(commit):
        raise UnsafeRepoError(
            f"The hub answered for {repo_id} with an invalid commit id ({str(commit)[:60]!r}); "
            "a commit id is 40 hex digits. Nothing was downloaded. Check the endpoint "
            "(HF_ENDPOINT) or pick another model."
        )
    return commit


def unsafe_path_reason(path: str) -> str | None:
    """Why ``path`` (a file name from a listing) is unsafe to place in the cache, or None."""
    if not path:
        return "an empty name"
    if len(path) > MAX_PATH_CHARS:
        return "a name longer than 1024 characters"
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        return "control characters"
    if "\\" in path:
        return "a backslash"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "an absolute path"
    parts = path.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        return "'..', '.' or empty segments"
    return None


def check_paths(repo_id: str, paths: Iterable[str]) -> None:
    """Refuse a listing with any file name that could escape the cache."""
    for path in paths:
        reason = unsafe_path_reason(path)
        if reason is not None:
            raise UnsafeRepoError(
                f"The hub lists a file of {repo_id} named {path[:80]!r}, which has {reason} "
                "and could be written outside the Hugging Face cache. Nothing was downloaded; "
                "pick another model or check the endpoint (HF_ENDPOINT)."
            )


def _int_field(
    repo_id: str, config: Mapping[str, Any], names: Iterable[str], cap: int
) -> int | None:
    for name in names:
        if name in config:
            value = config[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= cap:
                raise UnsafeRepoError(
                    f"The config.json of {repo_id} sets {name}={value!r}, which no loadable "
                    f"model has (at most {cap:,}). Nothing was downloaded; pick another model."
                )
            return value
    return None


def check_config(repo_id: str, config: object, tensors: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse a config that does not describe ``tensors`` (name -> shape, from the headers)."""
    if not isinstance(config, dict):
        raise UnsafeRepoError(
            f"The config.json of {repo_id} is not a JSON object. Nothing was downloaded."
        )
    text = config.get("text_config")
    cfg: Mapping[str, Any] = (
        text if isinstance(text, dict) and "vocab_size" not in config else config
    )
    vocab = _int_field(repo_id, cfg, ("vocab_size",), MAX_VOCAB)
    hidden = _int_field(repo_id, cfg, ("hidden_size", "n_embd", "d_model"), MAX_HIDDEN)
    layers = _int_field(repo_id, cfg, ("num_hidden_layers", "n_layer", "num_layers"), MAX_LAYERS)
    inner = _int_field(repo_id, cfg, ("intermediate_size", "n_inner", "ffn_dim"), MAX_INNER)
    heads = _int_field(repo_id, cfg, ("num_attention_heads", "n_head"), MAX_HEADS)
    kv_heads = _int_field(repo_id, cfg, ("num_key_value_heads",), MAX_HEADS)
    head_dim = _int_field(repo_id, cfg, ("head_dim",), MAX_HIDDEN)

    if not tensors:
        return

    def refuse(detail: str) -> UnsafeRepoError:
        return UnsafeRepoError(
            f"The config.json of {repo_id} does not match its weights: {detail}. Loading it "
            "would build a model of another shape than the files hold, so nothing was "
            "downloaded; pick another model."
        )

    embedding = next(
        (
            (name, shape)
            for name, shape in sorted(tensors.items())
            if name.endswith(_EMBEDDING_SUFFIXES) and len(shape) == 2
        ),
        None,
    )
    if embedding is not None:
        name, (rows, cols) = embedding
        if vocab is not None and rows != vocab:
            raise refuse(f"vocab_size is {vocab:,} but {name} has {rows:,} rows")
        if hidden is not None and cols != hidden:
            raise refuse(f"the hidden size is {hidden:,} but {name} has {cols:,} columns")
    indices = {int(m.group(1)) for name in tensors if (m := _LAYER_INDEX.search(name))}
    if layers is not None and indices and max(indices) + 1 != layers:
        raise refuse(f"it has {layers:,} layers but the weights have {max(indices) + 1:,}")
    held = sum(_numel(shape) for shape in tensors.values())
    if vocab is not None and hidden is not None and layers is not None and held > 0:
        # a rough count of what building the model from this config allocates
        n_heads = heads or 1
        dim = head_dim or max(1, hidden // n_heads)
        attention = 2 * hidden * n_heads * dim + 2 * hidden * (kv_heads or n_heads) * dim
        mlp = 3 * hidden * inner if inner else 8 * hidden * hidden
        described = layers * (attention + mlp) + vocab * hidden
        if described > MAX_PARAMETER_RATIO * held:
            raise refuse(
                f"it describes about {_count(described)} parameters but the weights hold "
                f"{_count(held)}"
            )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= int(dim)
    return n


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
