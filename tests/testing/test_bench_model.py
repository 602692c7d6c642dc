"""The bench model: SmolLM2-135M's dimensions, built once per machine and cached."""

from __future__ import annotations

import json
import struct
import time

import pytest

from chatwidget.testing.models import bench_model_path

BENCH = "bench/smollm2-135m-random"


@pytest.mark.bench
def test_bench_model_has_smollm2_dims_and_is_cached() -> None:
    root = bench_model_path()  # builds about 540 MB on first use, then cached
    started = time.monotonic()
    assert bench_model_path() == root
    assert time.monotonic() - started < 1.0, "second call rebuilt instead of using the cache"
    folder = root / BENCH
    config = json.loads((folder / "config.json").read_text())
    dims = {k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
    assert dims == {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9}
    assert (config["num_key_value_heads"], config["intermediate_size"]) == (3, 1536)
    assert config["vocab_size"] == 49152
    with (folder / "model.safetensors").open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    params = 0
    for name, value in header.items():
        if name != "__metadata__":
            count = 1
            for dim in value["shape"]:
                count *= dim
            params += count
            assert value["dtype"] == "F32", name
    assert params == 134_515_008  # SmolLM2-135M, embeddings tied
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == 49152
