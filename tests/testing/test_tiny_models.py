"""The tiny-model factory: deterministic, real architecture, the sizes the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chatwidget.testing.models import (
    CHAT_TEMPLATE,
    DIMS,
    build_model,
    build_weights_repo,
    llama_config,
    sha256_of,
)

MODELS_CLI = (sys.executable, "-m", "chatwidget.testing.models")


def _total_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_same_seed_builds_identical_bytes(tmp_path: Path) -> None:
    first = build_model(tmp_path / "a", "demo/tiny", "tiny", seed=3)
    second = build_model(tmp_path / "b", "demo/tiny", "tiny", seed=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert sha256_of(first / name) == sha256_of(second / name), name


def test_different_seed_changes_weights_but_not_tokenizer(tmp_path: Path) -> None:
    first = build_model(tmp_path, "demo/a", "tiny", seed=0)
    second = build_model(tmp_path, "demo/b", "tiny", seed=1)
    assert sha256_of(first / "model.safetensors") != sha256_of(second / "model.safetensors")
    assert sha256_of(first / "tokenizer.json") == sha256_of(second / "tokenizer.json")


def test_tiny_model_is_a_llama_under_one_megabyte_with_chatml(tmp_path: Path) -> None:
    folder = build_model(tmp_path, "demo/tiny", "tiny")
    assert _total_size(folder) < 1_000_000
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    generation = json.loads((folder / "generation_config.json").read_text())
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert generation["eos_token_id"] == config["eos_token_id"]
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert tokenizer_config["bos_token"] == "<|im_start|>"
    assert tokenizer_config["pad_token"] == "<|pad|>"
    assert (folder / "chat_template.jinja").read_text() == CHAT_TEMPLATE


def test_tiny_model_loads_and_templates_a_conversation_from_its_folder(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_model(tmp_path, "demo/tiny", "tiny")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there!"},
    ]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello there!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    new_tokens = out[0][enc["input_ids"].shape[1] :]
    # Special tokens have zero embeddings, so a random model never ends its reply early.
    assert len(new_tokens) == 12
    assert tok.decode(new_tokens, skip_special_tokens=True).strip()


def test_every_token_id_decodes_to_text(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = build_model(tmp_path, "demo/tiny", "tiny")
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == DIMS["tiny"].vocab
    specials = set(tok.all_special_ids)
    for token_id in range(len(tok)):
        if token_id not in specials:
            assert tok.decode([token_id]), token_id


def test_unknown_roles_are_rejected_by_the_template(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_model(tmp_path, "demo/tiny", "tiny"))
    with pytest.raises(Exception, match="Unknown role: tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_model_without_chat_template_has_none(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = build_model(tmp_path, "demo/plain", "tiny", chat_template=False)
    assert not (folder / "chat_template.jinja").exists()
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template is None
    with pytest.raises(ValueError, match="chat_template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_small_model_is_two_shards_between_20_and_50_megabytes(
    hub_root: Path, small_repo: str
) -> None:
    folder = hub_root / small_repo
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert (folder / "model.safetensors.index.json").is_file()
    assert 20_000_000 <= _total_size(folder) <= 50_000_000


def test_bench_dimensions_match_smollm2_135m() -> None:
    import torch
    from transformers import LlamaForCausalLM

    dims = DIMS["bench"]
    with torch.device("meta"):  # sizes only, no memory
        model = LlamaForCausalLM(llama_config(dims))
    params = sum(p.numel() for p in model.parameters())
    assert (dims.hidden, dims.layers, dims.heads, dims.kv_heads) == (576, 30, 9, 3)
    assert (dims.intermediate, dims.vocab) == (1536, 49152)
    # SmolLM2-135M has 134.5M parameters: about 540 MB in fp32.
    assert 130e6 < params < 140e6


def test_bad_name_says_how_to_write_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'org/name'"):
        build_model(tmp_path, "no-slash")
    with pytest.raises(ValueError, match="'org/name'"):
        build_model(tmp_path, "../escape")
    assert list(tmp_path.iterdir()) == []


def test_rebuilding_replaces_the_folder_and_leaves_no_staging(tmp_path: Path) -> None:
    folder = build_model(tmp_path, "demo/tiny", "tiny", seed=0)
    (folder / "stale.txt").write_text("old")
    build_model(tmp_path, "demo/tiny", "tiny", seed=1)
    assert not (folder / "stale.txt").exists()
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["tiny"]


def test_weights_repo_has_the_requested_size_and_is_deterministic(tmp_path: Path) -> None:
    first = build_weights_repo(tmp_path / "a", "bench/blob", 1_000_000)
    second = build_weights_repo(tmp_path / "b", "bench/blob", 1_000_000)
    size = (first / "model.safetensors").stat().st_size
    assert 1_000_000 <= size < 1_001_000
    assert sha256_of(first / "model.safetensors") == sha256_of(second / "model.safetensors")


# The CLI's happy path is covered by the round trip in test_hub_cli.py.
def test_cli_rejects_a_bad_name_with_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*MODELS_CLI, "build", str(tmp_path), "--name", "bad"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "org/name" in result.stderr
