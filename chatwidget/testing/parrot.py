"""A "parrot" model: a real tiny Llama whose every reply repeats one fixed text.

Random tiny models emit random words, so they cannot show how the UI renders a *model's*
output that contains HTML. The parrot is a real model, loaded and streamed through the
same code paths, whose greedy output is ``text`` repeated: its tokenizer gets ``text`` as
one added token, every layer's output projections are zeroed (so the last hidden state is
the current token's embedding), and the untied LM head scores only that token, along a
direction every embedding shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatwidget.testing.models import Size, build_model

XSS_TEXT = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def build_parrot_model(
    root: Path | str, name: str = "demo/parrot", text: str = XSS_TEXT, size: Size = "tiny"
) -> Path:
    """Write ``root/ORG/NAME`` and return it; greedy replies are ``text`` repeated (until
    ``max_new_tokens`` or the context of ``size`` is full: never an early end)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_model(root, name, size, seed=7)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_tokens([text])
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    target = tok.convert_tokens_to_ids(text)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb: Any = model.get_input_embeddings().weight
        shared = torch.zeros(emb.shape[1])
        shared[0] = 1.0
        emb.mul_(0.1).add_(shared * 5.0)  # every token points the same way
        head = torch.zeros_like(emb)
        head[target] = shared * 10.0
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(head)
    for old in [*folder.glob("*.safetensors"), *folder.glob("*.safetensors.index.json")]:
        old.unlink()  # the base model's shards: the parrot is written whole below
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
