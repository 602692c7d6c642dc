"""Find a model in the local Hugging Face cache and load it with transformers.

Nothing here touches the network: every lookup is ``local_files_only``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatwidget.catalog import ModelSpec
from chatwidget.engine.memory import drop_frame_references, format_error
from chatwidget.errors import ModelLoadError, ModelNotDownloadedError
from chatwidget.fit.devices import Devices, require_quantization

logger = logging.getLogger("chatwidget.engine.loader")

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_SAFETENSORS_SINGLE = "model.safetensors"
_PICKLE_INDEX = "pytorch_model.bin.index.json"
_PICKLE_SINGLE = "pytorch_model.bin"


@dataclass(frozen=True)
class CachedModel:
    """Where a model's files are in the local cache."""

    spec: ModelSpec
    snapshot_dir: Path
    config_path: Path
    weight_files: tuple[Path, ...]


@dataclass
class LoadedModel:
    """A model and tokenizer in memory, plus what the pool needs to account for them.

    ``generate_lock`` serializes generations on this model. A generation holds its own
    reference to this object, so it finishes even if the pool drops the model mid-way.
    """

    spec: ModelSpec
    model: Any
    tokenizer: Any
    memory_bytes: int  # the estimate the pool accounts with
    device_map: dict[str, str]
    generate_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def repo_id(self) -> str:
        return self.spec.repo_id


def _not_downloaded(spec: ModelSpec, detail: str) -> ModelNotDownloadedError:
    return ModelNotDownloadedError(
        f"{spec.repo_id} (revision {spec.revision!r}) is not fully in the local cache: {detail}. "
        "Download it first, then load it."
    )


def _weight_files_from_index(snapshot: Path, index_name: str) -> list[str] | None:
    index_path = snapshot / index_name
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        return sorted(set(index["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{index_path} is not a valid weight index: {exc}") from exc


def _find_weight_files(spec: ModelSpec, snapshot: Path) -> tuple[Path, ...]:
    names = _weight_files_from_index(snapshot, _SAFETENSORS_INDEX)
    if names is None and (snapshot / _SAFETENSORS_SINGLE).is_file():
        names = [_SAFETENSORS_SINGLE]
    if names is None:
        names = sorted(p.name for p in snapshot.glob("*.safetensors")) or None
    if names is None and spec.allow_pickle:
        names = _weight_files_from_index(snapshot, _PICKLE_INDEX)
        if names is None and (snapshot / _PICKLE_SINGLE).is_file():
            names = [_PICKLE_SINGLE]
    if names is None:
        has_pickle = any(snapshot.glob("*.bin")) or any(snapshot.glob("*.pt*"))
        if has_pickle and not spec.allow_pickle:
            raise ModelLoadError(
                f"{spec.repo_id} has only pickle weights (.bin/.pt), which can run code when "
                "loaded. Use a safetensors model, or set allow_pickle=True on its ModelSpec "
                "if you trust the repo."
            )
        raise _not_downloaded(spec, "no weight files (*.safetensors) in the cached snapshot")
    files = tuple(snapshot / name for name in names)
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise _not_downloaded(spec, f"missing weight files {missing}")
    return files


def find_in_cache(spec: ModelSpec, cache_dir: str | Path | None) -> CachedModel:
    """Locate ``spec`` in the cache, or raise :class:`ModelNotDownloadedError`."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        spec.repo_id, "config.json", cache_dir=cache_dir, revision=spec.revision
    )
    if not isinstance(found, str):
        raise _not_downloaded(spec, "config.json is not cached")
    config_path = Path(found)
    snapshot = config_path.parent
    return CachedModel(spec, snapshot, config_path, _find_weight_files(spec, snapshot))


def _precision(spec: ModelSpec) -> str:
    return spec.dtype if spec.quantization is None else f"{spec.quantization}, {spec.dtype}"


def _device_map_of(model: Any) -> dict[str, str]:
    hf_map = getattr(model, "hf_device_map", None)
    if isinstance(hf_map, dict) and hf_map:  # accelerate names GPUs by bare index
        return {str(k): f"cuda:{v}" if isinstance(v, int) else str(v) for k, v in hf_map.items()}
    return {"": str(getattr(model, "device", "cpu"))}


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Hide transformers' progress bars ("Loading weights", "Writing model shards").

    In a notebook they would print a tqdm widget into whichever cell ran last; the download
    manager shows the load instead."""
    from transformers.utils import logging as transformers_logging

    hf_logging: Any = transformers_logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def precision_kwargs(spec: ModelSpec, devices: Devices | None = None) -> dict[str, Any]:
    """``dtype`` (and ``quantization_config``) for ``from_pretrained``, from ``spec``.

    ``"auto"`` keeps the dtype the checkpoint names; a quantized spec loads its linear layers
    through bitsandbytes (8-bit, or 4-bit NF4 computing in ``spec.dtype``, bfloat16 for auto).
    Raises :class:`~chatwidget.errors.PrecisionUnavailableError` where bitsandbytes or CUDA
    is missing (``devices``: the machine's facts, probed when None).
    """
    import torch

    kwargs: dict[str, Any] = {
        "dtype": "auto" if spec.dtype == "auto" else getattr(torch, spec.dtype)
    }
    if spec.quantization is None:
        return kwargs
    require_quantization(spec, devices)
    from transformers import BitsAndBytesConfig as _BitsAndBytesConfig

    BitsAndBytesConfig: Any = _BitsAndBytesConfig  # noqa: N806 - untyped in transformers
    if spec.quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    else:
        compute = torch.bfloat16 if spec.dtype == "auto" else getattr(torch, spec.dtype)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    return kwargs


def load_from_cache(
    cached: CachedModel,
    *,
    cache_dir: str | Path | None,
    device_map: str | dict[str, Any],
    memory_bytes: int,
) -> LoadedModel:
    """Load model and tokenizer with ``from_pretrained`` from the cache only ("Compiling")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = cached.spec
    common: dict[str, Any] = {
        "revision": spec.revision,
        "cache_dir": cache_dir,
        "local_files_only": True,
        "trust_remote_code": spec.trust_remote_code,
    }
    precision = precision_kwargs(spec)  # refuses an unavailable quantization before any work
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.repo_id, **common)
        with no_progress_bars():
            model: Any = AutoModelForCausalLM.from_pretrained(
                spec.repo_id,
                device_map=device_map,
                use_safetensors=not spec.allow_pickle,
                **precision,
                **common,
            )
    except FileNotFoundError as exc:
        drop_frame_references(exc, keep_traceback=False)
        raise _not_downloaded(spec, str(exc)) from exc
    except Exception as exc:
        logger.warning("loading %s failed:\n%s", spec.repo_id, format_error(exc))
        drop_frame_references(exc, keep_traceback=False)  # frames hold the half-built model
        raise ModelLoadError(
            f"transformers could not load {spec.repo_id} from the cache: {exc}. "
            "Check that the download finished and the model is a causal LM."
        ) from exc
    model.eval()
    logger.info("loaded %s (%s) on %s", spec.repo_id, _precision(spec), _device_map_of(model))
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        memory_bytes=memory_bytes,
        device_map=_device_map_of(model),
    )
