"""The estimator: safetensors headers, the config's shape, the KV formula, the options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.errors import InvalidModelSpecError, PrecisionUnavailableError
from chatwidget.fit.estimator import (
    LOGITS_COPIES,
    MODEL_OVERHEAD_BYTES,
    RUNTIME_BYTES,
    TOKENIZER_BYTES_PER_TOKEN,
    kv_cache_bytes,
)
from chatwidget.fit.facts import SOURCE_HEADERS, SOURCE_HUB_SUMMARY, weights_from_summary

#: Qwen2.5-0.5B-Instruct's config.json, as published (the sizes that matter here).
QWEN_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 896,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "torch_dtype": "bfloat16",
    "vocab_size": 151936,
}


def _write(folder: Path, config: dict[str, object], tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _tiny_checkpoint(folder: Path, **config_changes: object) -> Path:
    """Two layers of a 16-wide decoder: fp32 matrices, an fp16 norm, an int8 buffer."""
    config: dict[str, object] = {
        "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 50,
        "max_position_embeddings": 64,
    }  # fmt: skip
    config.update(config_changes)
    tensors = {
        "model.embed_tokens.weight": torch.zeros(50, 16),
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(16, 16),
        "model.layers.0.mlp.up_proj.weight": torch.zeros(32, 16),
        "model.layers.1.mlp.down_proj.weight": torch.zeros(16, 32),
        "model.norm.weight": torch.zeros(16, dtype=torch.float16),
        "lm_head.weight": torch.zeros(50, 16),
        "model.codebook": torch.zeros(8, dtype=torch.int8),
    }
    return _write(folder, config, tensors)


def _facts(folder: Path) -> fit.ModelFacts:
    return fit.facts_from_files("org/m", folder / "config.json", [folder / "model.safetensors"])


def test_headers_give_element_counts_by_dtype_and_the_quantizable_share(tmp_path: Path) -> None:
    facts = _facts(_tiny_checkpoint(tmp_path))
    weights = facts.weights
    assert weights.source == SOURCE_HEADERS
    assert dict(weights.numel) == {"F32": 50 * 16 * 2 + 16 * 16 + 32 * 16 * 2, "F16": 16, "I8": 8}
    assert weights.quantizable_numel == 16 * 16 + 32 * 16 * 2  # not embeddings, head, norm
    assert weights.stored_float_dtype == "float32"
    assert weights.file_bytes == (tmp_path / "model.safetensors").stat().st_size


def test_float_tensors_take_the_option_dtype_and_integer_ones_stay_as_stored(
    tmp_path: Path,
) -> None:
    model = fit.estimate(_facts(_tiny_checkpoint(tmp_path)))
    floats = 50 * 16 * 2 + 16 * 16 + 32 * 16 * 2 + 16
    assert model.option("float32").weights_bytes == floats * 4 + 8
    assert model.option("bfloat16").weights_bytes == floats * 2 + 8
    assert model.option("float16").weights_bytes == floats * 2 + 8
    assert model.option("auto").dtype == "float32"  # no dtype in the config: the stored one
    assert model.option("auto").weights_bytes == model.option("float32").weights_bytes


def test_auto_is_the_dtype_the_config_names(tmp_path: Path) -> None:
    model = fit.estimate(_facts(_tiny_checkpoint(tmp_path, torch_dtype="bfloat16")))
    assert model.option("auto").dtype == "bfloat16"
    assert model.option("auto").weights_bytes == model.option("bfloat16").weights_bytes
    assert model.stored_dtype == "float32"


def test_kv_cache_matches_a_hand_computation_from_a_published_config() -> None:
    shape = fit.shape_from_config(QWEN_05B)
    assert shape is not None
    assert (shape.layers, shape.kv_heads, shape.head_dim) == (24, 2, 64)  # 896 / 14 heads
    # 24 layers x 2 KV heads x 64 x 2 (K and V) x 2 bytes (bf16) x 4096 tokens
    assert kv_cache_bytes(shape, 4096, "bfloat16") == 50_331_648
    assert kv_cache_bytes(shape, 4096, "float32") == 2 * 50_331_648
    assert kv_cache_bytes(shape, 1, "bfloat16") == 12_288


def test_estimate_sizes_the_kv_cache_for_the_chosen_context(tmp_path: Path) -> None:
    facts = _facts(_tiny_checkpoint(tmp_path))
    short = fit.estimate(facts, context_tokens=10).option("float32")
    assert short.kv_cache_bytes == 2 * 2 * 4 * 2 * 4 * 10  # layers, KV heads, head dim 4
    capped = fit.estimate(facts, context_tokens=1_000_000)
    assert capped.context_tokens == 64  # the model's own context
    assert fit.estimate(facts).context_tokens == 64  # the default is capped too
    with pytest.raises(ValueError, match="context_tokens"):
        fit.estimate(facts, context_tokens=0)


def test_estimate_parts_add_up_and_the_runtime_counts_once(tmp_path: Path) -> None:
    option = fit.estimate(_facts(_tiny_checkpoint(tmp_path)), context_tokens=8).option("float32")
    per_token = 2 * 16 + 2 * 4 * 4 + 2 * 2 * 4 + 3 * 32  # residual, q/out, k/v, gated MLP
    assert option.activation_bytes == 8 * per_token * 4 + LOGITS_COPIES * 50 * 4
    assert option.tokenizer_bytes == 50 * TOKENIZER_BYTES_PER_TOKEN
    assert option.overhead_bytes == MODEL_OVERHEAD_BYTES
    parts = (
        option.weights_bytes + option.kv_cache_bytes + option.activation_bytes
        + option.tokenizer_bytes + option.overhead_bytes
    )  # fmt: skip
    assert option.model_bytes == parts
    assert option.required_bytes(runtime_loaded=True) == parts
    assert option.required_bytes(runtime_loaded=False) == parts + RUNTIME_BYTES


def test_every_precision_option_is_estimated_and_quantized_ones_are_smaller(
    tmp_path: Path,
) -> None:
    model = fit.estimate(_facts(_tiny_checkpoint(tmp_path, torch_dtype="bfloat16")))
    assert [o.option for o in model.options] == list(fit.OPTIONS)
    bf16 = model.option("bfloat16").weights_bytes
    int8, nf4 = model.option("8bit"), model.option("4bit")
    assert nf4.weights_bytes < int8.weights_bytes < bf16
    assert (int8.quantization, int8.dtype) == ("8bit", "bfloat16")
    quantized = 16 * 16 + 32 * 16 * 2
    assert bf16 - nf4.weights_bytes == int(quantized * (2 - (0.5 + 4 / 64)))


def test_an_already_quantized_checkpoint_offers_auto_only_and_says_why(tmp_path: Path) -> None:
    folder = _tiny_checkpoint(tmp_path, quantization_config={"quant_method": "gptq", "bits": 4})
    model = fit.estimate(_facts(folder))
    assert [o.option for o in model.options] == ["auto"]
    assert "gptq" in model.unsupported["bfloat16"]
    with pytest.raises(KeyError, match="gptq"):
        model.option("4bit")
    with pytest.raises(PrecisionUnavailableError, match="already quantized"):
        model.for_spec(ModelSpec("org/m", dtype="float16"))


def test_for_spec_follows_the_spec_dtype_and_quantization(tmp_path: Path) -> None:
    model = fit.estimate(_facts(_tiny_checkpoint(tmp_path)))
    assert model.for_spec(ModelSpec("org/m")) == model.option("auto")
    assert model.for_spec(ModelSpec("org/m", dtype="bfloat16")) == model.option("bfloat16")
    assert model.for_spec(ModelSpec("org/m", quantization="4bit")) == model.option("4bit")
    fp16_4bit = model.for_spec(ModelSpec("org/m", dtype="float16", quantization="4bit"))
    assert (fp16_4bit.dtype, fp16_4bit.quantization) == ("float16", "4bit")
    assert fp16_4bit.weights_bytes < model.option("4bit").weights_bytes  # fp32 auto -> fp16 rest


def test_config_shapes_nested_text_configs_and_defaults() -> None:
    nested = {"text_config": {**QWEN_05B, "head_dim": 128}, "vocab_size": 1}
    shape = fit.shape_from_config(nested)
    assert shape is not None
    assert (shape.head_dim, shape.vocab, shape.dtype) == (128, 151936, "bfloat16")
    plain = fit.shape_from_config({"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 9})
    assert plain is not None
    assert (plain.kv_heads, plain.head_dim, plain.intermediate) == (12, 64, 3072)
    assert fit.shape_from_config({"model_type": "blob"}) is None


def test_hub_summary_stands_in_when_headers_are_missing() -> None:
    shape = fit.shape_from_config(QWEN_05B)
    weights = weights_from_summary({"BF16": 494_032_768}, 988_097_824, shape)
    assert weights.source == SOURCE_HUB_SUMMARY
    assert weights.quantizable_numel == 494_032_768 - 151936 * 896
    facts = fit.ModelFacts("Qwen/Qwen2.5-0.5B-Instruct", weights, shape)
    model = fit.estimate(facts)
    assert model.option("auto").weights_bytes == 988_065_536
    assert model.option("float32").weights_bytes == 2 * 988_065_536


def test_estimate_is_json_ready(tmp_path: Path) -> None:
    model = fit.estimate(_facts(_tiny_checkpoint(tmp_path)))
    data = json.loads(json.dumps(model.as_dict()))
    assert data["repo_id"] == "org/m"
    assert [o["option"] for o in data["options"]] == list(fit.OPTIONS)
    assert data["options"][0]["model_bytes"] == model.option("auto").model_bytes


def test_model_spec_carries_its_precision_and_refuses_unknown_ones() -> None:
    spec = ModelSpec("org/m", dtype="bfloat16", quantization="4bit")
    assert (spec.dtype, spec.quantization) == ("bfloat16", "4bit")
    assert spec != ModelSpec("org/m")  # a different precision is a different load
    with pytest.raises(InvalidModelSpecError, match="dtype 'bf16'"):
        ModelSpec("org/m", dtype="bf16")
    with pytest.raises(InvalidModelSpecError, match="quantization '3bit'") as caught:
        ModelSpec("org/m", quantization="3bit")
    assert isinstance(caught.value, ValueError)
