"""transformers loads tiny models by repo id through the local hub, templates a chat and streams."""

from __future__ import annotations

import threading
from typing import Any

from chatwidget.testing.hub import LocalHub

TINY = "demo/tiny-chat"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _load(repo_id: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(repo_id)
    model = AutoModelForCausalLM.from_pretrained(repo_id, use_safetensors=True)
    return tok, model


def test_auto_classes_load_by_repo_id_through_the_hub(
    hf_endpoint: str, local_hub: LocalHub
) -> None:
    tok, model = _load(TINY)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    weights = [r for r in local_hub.requests if r.path.endswith("/model.safetensors")]
    assert [r.method for r in weights] == ["HEAD", "GET"]
    # Optional tokenizer files the repo lacks are answered as missing entries, not errors.
    missing = {r.path.rsplit("/", 1)[1] for r in local_hub.requests if r.status == 404}
    assert "tokenizer.model" in missing


def test_streamed_greedy_reply_equals_the_non_streamed_one(hf_endpoint: str) -> None:
    from transformers import TextIteratorStreamer

    tok, model = _load(TINY)
    enc = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt")
    prompt = tok.decode(enc["input_ids"][0])
    assert prompt.endswith("<|im_start|>assistant\n")

    out = model.generate(**enc, max_new_tokens=24, do_sample=False)
    expected = tok.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True)

    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=60)
    errors: list[BaseException] = []

    def generate() -> None:
        try:
            model.generate(**enc, max_new_tokens=24, do_sample=False, streamer=streamer)
        except BaseException as exc:  # reported below; the streamer would block otherwise
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=generate, name="test-generate")
    worker.start()
    pieces = list(streamer)
    worker.join(60)
    assert not worker.is_alive()
    assert errors == []
    assert len(pieces) > 1, "the reply arrived in one piece, not streamed"
    assert "".join(pieces) == expected
    assert expected.strip()


def test_two_demo_models_give_different_replies(hf_endpoint: str) -> None:
    replies = []
    for repo_id in (TINY, "demo/tiny-chat-b"):
        tok, model = _load(repo_id)
        enc = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=16, do_sample=False)
        replies.append(tok.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True))
    assert replies[0] != replies[1]
