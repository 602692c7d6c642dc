"""Will it fit? The one estimate of a model's memory, per precision option, and its verdicts.

Used by the download plan (before the first byte), by the engine (before a load) and by the
model selector. Three steps, each a plain function of plain data:

1. **facts** (:mod:`~chatwidget.fit.sources`): safetensors headers and ``config.json``, from
   the cache (:func:`facts_from_files`) or from the hub with Range requests
   (:func:`facts_from_hub`);
2. **estimate** (:func:`estimate`): bytes per option (``auto``, ``bfloat16``, ``float16``,
   ``float32``, ``8bit``, ``4bit``), split into weights, KV cache, activations, tokenizer,
   model overhead and the once-per-process runtime;
3. **verdict** (:func:`judge`): per option, fits on GPU / partial offload / CPU only / won't
   fit, against a :class:`Devices` (probed, or built by hand in tests) and a memory budget.

Example::

    facts = facts_from_files(repo_id, config_path, weight_files)
    table = judge(estimate(facts, context_tokens=4096), probe(), budget_bytes=engine_budget)
    for row in table.rows:
        print(row.option, row.label, row.required_bytes, row.note)
    for gone in table.absent:
        print(gone.option, "absent:", gone.reason)
"""

from __future__ import annotations

from pathlib import Path

from chatwidget.catalog import ModelSpec
from chatwidget.fit.devices import Devices, Gpu, probe, require_quantization, runtime_loaded
from chatwidget.fit.estimator import (
    DEFAULT_CONTEXT_TOKENS,
    DTYPE_OPTIONS,
    OPTIONS,
    QUANTIZED_OPTIONS,
    ModelEstimate,
    OptionEstimate,
    estimate,
    together,
)
from chatwidget.fit.facts import ModelFacts, ModelShape, Weights, shape_from_config
from chatwidget.fit.sources import facts_from_files, facts_from_hub, remember, remembered
from chatwidget.fit.verdict import AbsentOption, FitTable, OptionFit, Verdict, judge, judge_option


def fit_table(
    model: ModelEstimate,
    *,
    budget_bytes: int | None = None,
    devices: Devices | None = None,
    loaded: bool | None = None,
) -> FitTable:
    """:func:`judge` on this machine: ``devices`` and ``loaded`` (whether the transformers
    runtime is in this process already) are probed when not given."""
    return judge(
        model,
        devices if devices is not None else probe(),
        budget_bytes=budget_bytes,
        runtime_loaded=runtime_loaded() if loaded is None else loaded,
    )


def estimate_files(
    repo_id: str,
    config_path: Path | None,
    weight_files: tuple[Path, ...] | list[Path],
    *,
    commit: str | None = None,
    context_tokens: int | None = None,
) -> ModelEstimate:
    """:func:`estimate` of a model on disk (``config.json`` and its weight files)."""
    facts = facts_from_files(repo_id, config_path, weight_files, commit=commit)
    return estimate(facts, context_tokens=context_tokens)


def estimate_cached(
    spec: ModelSpec, cache_dir: str | Path | None, *, context_tokens: int | None = None
) -> ModelEstimate | None:
    """:func:`estimate` of ``spec`` from the local HF cache; None when it is not downloaded."""
    from chatwidget.engine.loader import find_in_cache
    from chatwidget.errors import ModelNotDownloadedError

    try:
        cached = find_in_cache(spec, cache_dir)
    except ModelNotDownloadedError:
        return None
    return estimate_files(
        spec.repo_id, cached.config_path, cached.weight_files, context_tokens=context_tokens
    )


def estimate_size(repo_id: str, size_bytes: int) -> ModelEstimate:
    """A coarse estimate from the weights' size alone (no config: no KV cache counted)."""
    facts = ModelFacts(repo_id, Weights({}, 0, size_bytes, "size"), None)
    return estimate(facts)


__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "DTYPE_OPTIONS",
    "OPTIONS",
    "QUANTIZED_OPTIONS",
    "AbsentOption",
    "Devices",
    "FitTable",
    "Gpu",
    "ModelEstimate",
    "ModelFacts",
    "ModelShape",
    "OptionEstimate",
    "OptionFit",
    "Verdict",
    "Weights",
    "estimate",
    "estimate_cached",
    "estimate_files",
    "estimate_size",
    "facts_from_files",
    "facts_from_hub",
    "fit_table",
    "judge",
    "judge_option",
    "probe",
    "remember",
    "remembered",
    "require_quantization",
    "runtime_loaded",
    "shape_from_config",
    "together",
]
