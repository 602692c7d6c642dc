"""Verdicts per option, with the device and memory facts injected: every outcome on any machine."""

from __future__ import annotations

import json

import pytest

from chatwidget import fit
from chatwidget.catalog import ModelSpec
from chatwidget.engine.loader import precision_kwargs
from chatwidget.errors import PrecisionUnavailableError
from chatwidget.fit import Devices, Gpu, Verdict
from chatwidget.fit.estimator import RUNTIME_BYTES
from chatwidget.fit.facts import ModelFacts, Weights
from chatwidget.fit.verdict import CUDA_CONTEXT_BYTES, HEADROOM_FRACTION

GB = 1000**3
QWEN_15B = {
    "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12,
    "num_hidden_layers": 28, "num_key_value_heads": 2, "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16", "vocab_size": 151936,
}  # fmt: skip
PARAMS = 1_543_714_304  # Qwen2.5-1.5B-Instruct, all BF16


def _estimate() -> fit.ModelEstimate:
    shape = fit.shape_from_config(QWEN_15B)
    quantizable = PARAMS - 151936 * 1536
    weights = Weights({"BF16": PARAMS}, quantizable, PARAMS * 2)
    return fit.estimate(ModelFacts("Qwen/Qwen2.5-1.5B-Instruct", weights, shape))


def _gpu(index: int, free_gb: float) -> Gpu:
    return Gpu(index, "Test GPU", int(free_gb * GB), int(80 * GB))


def test_without_a_gpu_it_runs_on_cpu_and_8_and_4_bit_are_absent_with_the_reason() -> None:
    table = fit.judge(_estimate(), Devices(ram_free_bytes=16 * GB))
    assert [r.option for r in table.rows] == ["auto", "bfloat16", "float16", "float32"]
    assert {r.verdict for r in table.rows} == {Verdict.CPU}
    assert table.row("auto").label == "CPU only"
    absent = {a.option: a.reason for a in table.absent}
    assert set(absent) == {"8bit", "4bit"}
    assert "CUDA" in absent["8bit"]
    assert "bitsandbytes" in absent["8bit"]
    with pytest.raises(KeyError, match="CUDA"):
        table.row("4bit")


def test_cpu_row_carries_its_numbers() -> None:
    devices = Devices(ram_free_bytes=16 * GB)
    row = fit.judge(_estimate(), devices, runtime_loaded=False).row("bfloat16")
    option = _estimate().option("bfloat16")
    assert row.required_bytes == option.model_bytes + RUNTIME_BYTES
    assert row.placement == {"cpu": row.required_bytes}
    assert row.available_bytes == {"cpu": 16 * GB}
    assert "GB" in row.note
    loaded = fit.judge(_estimate(), devices, runtime_loaded=True).row("bfloat16")
    assert loaded.required_bytes == option.model_bytes


def test_too_little_ram_means_it_wont_fit_and_float32_fails_first() -> None:
    model = _estimate()
    bf16, fp32 = model.option("bfloat16"), model.option("float32")
    between = (
        bf16.required_bytes(runtime_loaded=True) + fp32.required_bytes(runtime_loaded=True)
    ) // 2
    table = fit.judge(model, Devices(int(between / HEADROOM_FRACTION)), runtime_loaded=True)
    assert table.row("bfloat16").verdict is Verdict.CPU
    assert table.row("float32").verdict is Verdict.NONE
    assert table.row("float32").label == "Won't fit"
    assert "RAM" in table.row("float32").note


def test_budget_below_the_need_means_it_wont_fit_whatever_is_free() -> None:
    model = _estimate()
    budget = model.option("bfloat16").model_bytes - 1
    row = fit.judge(model, Devices(ram_free_bytes=500 * GB), budget_bytes=budget).row("bfloat16")
    assert row.verdict is Verdict.NONE
    assert "budget" in row.note
    assert row.budget_bytes == budget


def test_a_large_gpu_holds_everything_and_offers_8_and_4_bit() -> None:
    devices = Devices(ram_free_bytes=16 * GB, gpus=(_gpu(0, 24),), bitsandbytes=True)
    table = fit.judge(_estimate(), devices)
    assert [r.option for r in table.rows] == list(fit.OPTIONS)
    assert table.absent == ()
    assert {r.verdict for r in table.rows} == {Verdict.GPU}
    row = table.row("4bit")
    assert row.label == "Fits on GPU"
    option = row.estimate
    assert row.placement["cuda:0"] == option.device_bytes + CUDA_CONTEXT_BYTES
    assert row.placement["cpu"] == option.host_bytes + RUNTIME_BYTES
    assert row.available_bytes == {"cpu": 16 * GB, "cuda:0": 24 * GB}


def test_a_small_gpu_means_partial_offload_but_bitsandbytes_must_fit_whole() -> None:
    model = _estimate()
    bf16 = model.option("bfloat16").device_bytes
    nf4 = model.option("4bit").device_bytes
    free = (nf4 + CUDA_CONTEXT_BYTES) / HEADROOM_FRACTION + 10_000_000  # 4-bit fits, bf16 not
    devices = Devices(16 * GB, gpus=(Gpu(0, "small", int(free), int(free)),), bitsandbytes=True)
    table = fit.judge(model, devices)
    partial = table.row("bfloat16")
    assert partial.verdict is Verdict.PARTIAL
    assert partial.label == "Partial offload"
    on_gpu = partial.placement["cuda:0"] - CUDA_CONTEXT_BYTES
    assert on_gpu + (partial.placement["cpu"] - partial.estimate.host_bytes - RUNTIME_BYTES) == bf16
    assert "RAM" in partial.note
    assert table.row("4bit").verdict is Verdict.GPU
    float32 = table.row("float32")
    assert float32.verdict is Verdict.PARTIAL
    eight = table.row("8bit")
    assert eight.verdict is Verdict.NONE
    assert "must all be on the GPU" in eight.note


def test_two_gpus_share_a_model_that_neither_holds_alone() -> None:
    model = _estimate()
    need = model.option("float32").device_bytes
    each = (need / 2 + CUDA_CONTEXT_BYTES) / HEADROOM_FRACTION + 50_000_000
    gpus = (Gpu(0, "a", int(each), int(each)), Gpu(1, "b", int(each), int(each)))
    row = fit.judge(model, Devices(16 * GB, gpus=gpus)).row("float32")
    assert row.verdict is Verdict.GPU
    assert set(row.placement) == {"cuda:0", "cuda:1", "cpu"}
    assert "cuda:0, cuda:1" in row.note


def test_a_gpu_without_bitsandbytes_says_to_install_it() -> None:
    table = fit.judge(_estimate(), Devices(16 * GB, gpus=(_gpu(0, 24),), bitsandbytes=False))
    reasons = {a.option: a.reason for a in table.absent}
    assert set(reasons) == {"8bit", "4bit"}
    assert "pip install bitsandbytes" in reasons["4bit"]
    assert "GPU" not in reasons["4bit"].split("need")[0]


def test_a_full_gpu_leaves_the_model_on_cpu() -> None:
    devices = Devices(16 * GB, gpus=(Gpu(0, "busy", 100_000_000, 80 * GB),))
    row = fit.judge(_estimate(), devices).row("bfloat16")
    assert row.verdict is Verdict.CPU
    assert "cuda:0" not in row.placement


def test_table_is_json_ready_for_rows() -> None:
    devices = Devices(16 * GB, gpus=(_gpu(0, 2),), bitsandbytes=True)
    data = json.loads(json.dumps(fit.judge(_estimate(), devices, budget_bytes=20 * GB).as_dict()))
    assert data["repo_id"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert data["context_tokens"] == 4096
    row = data["rows"][0]
    assert set(row) >= {"option", "verdict", "label", "required_bytes", "placement", "note"}
    assert row["available_bytes"] == {"cpu": 16 * GB, "cuda:0": 2 * GB}


def test_quantization_is_refused_before_load_where_it_cannot_run_and_configured_where_it_can() -> (
    None
):
    spec = ModelSpec("org/m", quantization="8bit")
    with pytest.raises(PrecisionUnavailableError, match="CUDA GPU; none"):
        precision_kwargs(spec, Devices(16 * GB, bitsandbytes=True))
    ready = Devices(16 * GB, gpus=(_gpu(0, 24),), bitsandbytes=True)
    kwargs = precision_kwargs(spec, ready)
    assert kwargs["dtype"] == "auto"
    assert kwargs["quantization_config"].load_in_8bit
    four = precision_kwargs(ModelSpec("org/m", dtype="float16", quantization="4bit"), ready)
    assert four["quantization_config"].load_in_4bit
    assert str(four["quantization_config"].bnb_4bit_compute_dtype) == "torch.float16"
    assert str(precision_kwargs(ModelSpec("org/m", dtype="bfloat16"))["dtype"]) == "torch.bfloat16"


def test_two_models_side_by_side_count_the_runtime_once() -> None:
    one = _estimate().option("bfloat16")
    pair = fit.together([one, one])
    assert pair.model_bytes == 2 * one.model_bytes
    assert pair.required_bytes(runtime_loaded=False) == 2 * one.model_bytes + RUNTIME_BYTES
    ram = int((one.required_bytes(runtime_loaded=False) + one.model_bytes // 2) / HEADROOM_FRACTION)
    assert fit.judge_option(one, Devices(ram)).verdict is Verdict.CPU
    both = fit.judge_option(pair, Devices(ram))
    assert both.verdict is Verdict.NONE
    assert both.option == "bfloat16 + bfloat16"
    with pytest.raises(ValueError, match="at least one"):
        fit.together([])
