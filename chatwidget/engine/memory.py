"""Memory arithmetic for the engine: free RAM/GPU memory, and what a model needs.

What a model needs comes from :mod:`chatwidget.fit`, the one estimate the download plan and
the selector use too: safetensors headers and ``config.json`` in the local cache (a few
kilobytes read, no weights), at the precision the spec loads in.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.fit.verdict import HEADROOM_FRACTION

if TYPE_CHECKING:
    from chatwidget.engine.loader import CachedModel

logger = logging.getLogger("chatwidget.engine.memory")

#: The default warm-pool budget: this fraction of the memory free when the engine starts.
DEFAULT_BUDGET_FRACTION = 0.5
#: Never plan to use more than this fraction of what is physically free right now (the same
#: headroom the fit verdicts keep).
PHYSICAL_HEADROOM_FRACTION = HEADROOM_FRACTION


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


def cached_model_bytes(cached: CachedModel) -> int:
    """Bytes a cached model needs loaded at its spec's precision: the fit estimate's model part
    (weights, KV cache for the default context, activations, tokenizer, overhead), from its
    ``config.json`` and safetensors headers. Raises PrecisionUnavailableError for a
    quantization this machine cannot load."""
    spec = cached.spec
    fit.require_quantization(spec)
    model = fit.estimate_files(spec.repo_id, cached.config_path, cached.weight_files)
    return model.for_spec(spec).model_bytes


def uncached_model_bytes(spec: ModelSpec, cache_dir: str | Path | None) -> int | None:
    """The same for a model not downloaded yet: from the facts a download plan read from the
    hub in this process, else from ``spec.size_bytes``; None when neither is known."""
    fit.require_quantization(spec)
    facts = fit.remembered(cache_dir, spec.repo_id, spec.revision)
    if facts is not None:
        return fit.estimate(facts).for_spec(spec).model_bytes
    if spec.size_bytes is None:
        return None
    return fit.estimate_size(spec.repo_id, spec.size_bytes).for_spec(spec).model_bytes


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
