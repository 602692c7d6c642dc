"""Memory arithmetic for the engine: free RAM/GPU memory and model size estimates.

Estimates come from safetensors headers in the local cache (no weights are read),
so they cost a few kilobytes of I/O. With ``dtype="auto"`` transformers keeps the
dtype the config names (or the stored one), and the estimate follows the same rule.
"""

from __future__ import annotations

import json
import logging
import struct
import traceback
from collections.abc import Iterable
from pathlib import Path

import psutil

logger = logging.getLogger("chatwidget.engine.memory")

#: Runtime memory on top of the weights: activations, KV cache, allocator slack.
RUNTIME_OVERHEAD_FRACTION = 0.2
#: A fixed floor of runtime memory per model (tokenizer, buffers, Python objects).
RUNTIME_OVERHEAD_BYTES = 16 * 1024 * 1024
#: The default warm-pool budget: this fraction of the memory free when the engine starts.
DEFAULT_BUDGET_FRACTION = 0.5
#: Never plan to use more than this fraction of what is physically free right now.
PHYSICAL_HEADROOM_FRACTION = 0.9

_DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}  # fmt: skip
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
_CONFIG_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def process_rss_bytes() -> int:
    """Resident memory of this process."""
    return int(psutil.Process().memory_info().rss)


def free_ram_bytes() -> int:
    """RAM available to new allocations without swapping (psutil's ``available``)."""
    return int(psutil.virtual_memory().available)


def cuda_free_bytes() -> dict[int, int]:
    """Free memory of each CUDA device, ``{}`` when CUDA is not available."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {i: int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())}


def cuda_allocated_bytes() -> int:
    """Bytes allocated by torch on all CUDA devices (0 without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return 0
    return sum(int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count()))


def default_budget_bytes() -> int:
    """A safe warm-pool budget: half of free RAM plus half of the free memory of every GPU."""
    total = free_ram_bytes() + sum(cuda_free_bytes().values())
    return int(total * DEFAULT_BUDGET_FRACTION)


def safetensors_tensor_bytes(path: Path, target_float_bytes: int | None = None) -> int:
    """Bytes of the tensors in one safetensors file, read from its header only.

    ``target_float_bytes`` re-sizes floating-point tensors to the dtype they will be
    loaded in; ``None`` keeps the stored dtype.
    """
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _MAX_HEADER_BYTES:
            raise ValueError(f"{path} has an implausible safetensors header of {header_len} bytes")
        header = json.loads(fh.read(header_len))
    total = 0.0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for dim in info["shape"]:
            numel *= int(dim)
        dtype = str(info["dtype"])
        if target_float_bytes is not None and dtype in _FLOAT_DTYPES:
            total += numel * target_float_bytes
        else:
            total += numel * _DTYPE_BYTES.get(dtype, 4)
    return int(total)


def config_float_bytes(config_path: Path) -> int | None:
    """Bytes per float parameter that ``dtype="auto"`` takes from ``config.json``, if set."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for source in (config, text_config):
        for key in ("dtype", "torch_dtype"):
            value = source.get(key)
            if isinstance(value, str) and value in _CONFIG_DTYPE_BYTES:
                return _CONFIG_DTYPE_BYTES[value]
    return None


def weights_bytes(weight_files: Iterable[Path], config_path: Path | None) -> int:
    """In-memory size of the weights once loaded with ``dtype="auto"``."""
    target = config_float_bytes(config_path) if config_path is not None else None
    total = 0
    for path in weight_files:
        if path.suffix == ".safetensors":
            total += safetensors_tensor_bytes(path, target)
        else:  # pickle checkpoints (opt-in only): their file size is the best cheap guess
            total += path.stat().st_size
    return total


def with_runtime_overhead(weight_bytes: int) -> int:
    """Total memory a model needs to run: its weights plus runtime overhead."""
    return int(weight_bytes * (1 + RUNTIME_OVERHEAD_FRACTION)) + RUNTIME_OVERHEAD_BYTES


def format_error(exc: BaseException) -> str:
    """The full traceback of ``exc`` as text, to log without keeping the traceback alive
    (a log record holding ``exc_info`` would keep every frame of it)."""
    return "".join(traceback.format_exception(exc)).rstrip()


def drop_frame_references(exc: BaseException, *, keep_traceback: bool = True) -> None:
    """Free what the tracebacks of ``exc`` and of its causes and contexts keep alive.

    A traceback keeps its frames, and so their locals and the closures of their functions,
    alive: an error raised while a model was in use would keep the model's tensors reachable
    for as long as anyone holds the error (``sys.last_exc`` in a notebook, a stored failure).
    Finished frames are cleared; the tracebacks of causes and contexts are dropped (log them
    first), and so is the one of ``exc`` unless ``keep_traceback``.
    """
    seen: set[int] = set()
    pending: list[tuple[BaseException, bool]] = [(exc, keep_traceback)]
    while pending:
        current, keep = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
            if not keep:
                current.__traceback__ = None
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append((linked, False))
