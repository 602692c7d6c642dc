"""What the estimate needs to know about a model: its weights and its shape.

Both come from small metadata, never from the weights themselves:

- :class:`Weights`, from safetensors headers (dtype and shape of every tensor), read from the
  cached files or with HTTP Range requests before a download;
- :class:`ModelShape`, from ``config.json`` (layers, KV heads, head size, context length, ...).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatwidget.fit.dtypes import SAFETENSORS_BYTES, torch_name

#: A header larger than this is refused (the format's own sanity limit is 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024

#: Where the weights figures came from, best first.
SOURCE_HEADERS = "safetensors headers"
SOURCE_HUB_SUMMARY = "the hub's parameter counts"
SOURCE_FILE_SIZES = "file sizes"

#: Name fragments of tensors bitsandbytes leaves unquantized (embeddings and the output head).
_UNQUANTIZED_PARTS = ("embed", "lm_head", "wte", "wpe", "word_embeddings")
#: Whole names of output heads that carry no telling fragment.
_UNQUANTIZED_NAMES = frozenset({"output.weight", "model.output.weight"})


@dataclass(frozen=True)
class Tensor:
    """One tensor as a safetensors header describes it."""

    name: str
    dtype: str  # safetensors name: "F32", "BF16", "I8", ...
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def quantizable(self) -> bool:
        """Whether bitsandbytes would quantize it: a 2-D linear weight, not an embedding/head."""
        return (
            len(self.shape) == 2
            and self.name.endswith(".weight")
            and self.name not in _UNQUANTIZED_NAMES
            and not any(part in self.name for part in _UNQUANTIZED_PARTS)
        )


@dataclass(frozen=True)
class Weights:
    """Element counts of a checkpoint by stored dtype, and how many bitsandbytes would quantize.

    ``source`` says how exact it is: the headers themselves, the hub's per-dtype summary (no
    shapes: the quantizable share is estimated), or only the files' sizes.
    """

    numel: Mapping[str, int]  # stored safetensors dtype -> elements
    quantizable_numel: int
    file_bytes: int  # size of the weight files
    source: str = SOURCE_HEADERS

    @property
    def parameters(self) -> int:
        return sum(self.numel.values())

    @property
    def stored_bytes(self) -> int:
        """Bytes of the tensors as stored (the files' size without headers)."""
        if not self.numel:
            return self.file_bytes
        return int(sum(n * SAFETENSORS_BYTES.get(d, 4) for d, n in self.numel.items()))

    @property
    def stored_float_dtype(self) -> str | None:
        """The torch name of the float dtype most elements are stored in, if any."""
        floats = {d: n for d, n in self.numel.items() if torch_name(d) is not None}
        if not floats:
            return None
        return torch_name(max(floats, key=lambda d: floats[d]))


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that memory depends on, from ``config.json``."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    context_length: int
    dtype: str | None = None  # the torch dtype the config names, None when unset
    quantization: str | None = None  # quant_method of a checkpoint that is already quantized


@dataclass(frozen=True)
class ModelFacts:
    """Everything the estimate reads: the weights, and the shape when the config has one."""

    repo_id: str
    weights: Weights
    shape: ModelShape | None
    commit: str | None = None
    notes: tuple[str, ...] = field(default=())


# --- safetensors headers -------------------------------------------------------------------


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a local safetensors file (reads only the header's bytes)."""
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > MAX_HEADER_BYTES:
            raise ValueError(f"{path} has an implausible safetensors header of {header_len} bytes")
        header = json.loads(fh.read(header_len))
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a safetensors header that is not a JSON object")
    return header


def tensors_of(header: Mapping[str, Any]) -> list[Tensor]:
    """The tensors a parsed safetensors header lists (``__metadata__`` skipped)."""
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tensors.append(Tensor(name, str(info["dtype"]), tuple(int(d) for d in info["shape"])))
    return tensors


def weights_of(tensors: Iterable[Tensor], file_bytes: int) -> Weights:
    """Sum tensors into :class:`Weights`."""
    numel: dict[str, int] = {}
    quantizable = 0
    for tensor in tensors:
        numel[tensor.dtype] = numel.get(tensor.dtype, 0) + tensor.numel
        if tensor.quantizable:
            quantizable += tensor.numel
    return Weights(numel, quantizable, file_bytes, SOURCE_HEADERS)


def weights_from_summary(
    parameters: Mapping[str, int], file_bytes: int, shape: ModelShape | None
) -> Weights:
    """:class:`Weights` from the hub's per-dtype parameter counts (no shapes known).

    The quantizable share is everything but the embeddings (input and output, as the config's
    tying is unknown here, both are counted once).
    """
    numel = {str(d): int(n) for d, n in parameters.items() if int(n) > 0}
    total = sum(numel.values())
    embeddings = shape.vocab * shape.hidden if shape is not None else 0
    return Weights(numel, max(0, total - embeddings), file_bytes, SOURCE_HUB_SUMMARY)


# --- config.json ---------------------------------------------------------------------------


def _first_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def shape_from_config(config: Mapping[str, Any]) -> ModelShape | None:
    """The :class:`ModelShape` of a transformers ``config.json`` (``text_config`` if nested).

    None when the config lacks the sizes of a decoder (e.g. it is not a language model).
    """
    text = config.get("text_config")
    source: Mapping[str, Any] = text if isinstance(text, dict) else config
    layers = _first_int(source, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first_int(source, "num_attention_heads", "n_head")
    hidden = _first_int(source, "hidden_size", "n_embd", "d_model")
    vocab = _first_int(source, "vocab_size") or _first_int(config, "vocab_size")
    if layers is None or heads is None or hidden is None or vocab is None:
        return None
    kv_heads = _first_int(source, "num_key_value_heads", "num_kv_heads") or heads
    head_dim = _first_int(source, "head_dim") or hidden // heads
    intermediate = _first_int(source, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    context = _first_int(
        source, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"
    )
    dtype = None
    for where in (config, source):
        for key in ("dtype", "torch_dtype"):
            value = where.get(key)
            if isinstance(value, str) and torch_name(value) is not None:
                dtype = torch_name(value)
                break
        if dtype is not None:
            break
    quant = config.get("quantization_config")
    method = str(quant.get("quant_method", "quantized")) if isinstance(quant, dict) else None
    return ModelShape(
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        hidden=hidden,
        intermediate=intermediate,
        vocab=vocab,
        context_length=context or 2048,
        dtype=dtype,
        quantization=method,
    )


def read_config(path: Path) -> dict[str, Any] | None:
    """A ``config.json`` as a dict, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
