"""The parrot model is a real model whose greedy replies repeat a fixed text."""

from __future__ import annotations

from pathlib import Path

from chatwidget.testing.parrot import XSS_TEXT, build_parrot_model


def test_parrot_replies_with_its_text_through_the_chat_template(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_parrot_model(tmp_path)
    assert (folder / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for prompt in ("hello", "What is the capital of France?"):
        enc = tok.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        out = model.generate(**enc, max_new_tokens=2, do_sample=False)
        reply = tok.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert reply == XSS_TEXT * 2
