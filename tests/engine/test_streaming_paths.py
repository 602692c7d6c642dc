"""The streaming core's fast paths give exactly what the slow, general ones give.

``TokenStream`` decodes with the tokenizer's backend, fitting renders and tokenizes in two
steps, and the prompt becomes tensors through numpy: each is checked here against the
transformers call it stands for, on a real tiny model's tokenizer and chat template.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.streaming import (
    TokenStream,
    _apply_template,
    _as_tensors,
    _fast_decode,
    encode_chat,
)
from chatwidget.engine.types import GenerationSettings
from chatwidget.testing.models import CORPUS

TEXTS = [
    "plain words and spaces",
    "line one\nline two\n\nafter a blank line",
    "unicode: naïve café — 東京 🙂 ok",
    "symbols <b>bold</b> `code` {x: 1} 100%",
]


def _ids(loaded: LoadedModel) -> list[list[int]]:
    tok = loaded.tokenizer
    special = [tok.eos_token_id, tok.bos_token_id]
    out = [tok(t, add_special_tokens=False)["input_ids"] for t in [*TEXTS, " ".join(CORPUS)]]
    out.append([*out[0][:2], *(i for i in special if i is not None), *out[1]])
    return out


def test_fast_decode_equals_tokenizer_decode(loaded: LoadedModel) -> None:
    decode = _fast_decode(loaded.tokenizer)
    for ids in _ids(loaded):
        for stop in range(len(ids) + 1):
            expected = loaded.tokenizer.decode(ids[:stop], skip_special_tokens=True)
            assert decode(ids[:stop]) == expected


def test_fast_decode_falls_back_when_the_tokenizer_cleans_up_spaces(
    loaded: LoadedModel,
) -> None:
    class Recording:
        clean_up_tokenization_spaces = True

        def __init__(self) -> None:
            self.calls: list[Any] = []

        def decode(self, ids: list[int], **kwargs: Any) -> str:
            self.calls.append((ids, kwargs))
            return "x"

    tok = Recording()
    assert _fast_decode(tok)([1, 2]) == "x"
    assert tok.calls == [([1, 2], {"skip_special_tokens": True})]


@pytest.mark.parametrize("per_put", [1, 3])
def test_token_stream_pieces_add_up_to_the_decoded_reply(loaded: LoadedModel, per_put: int) -> None:
    for ids in _ids(loaded):
        pieces: list[str] = []
        stream = TokenStream(loaded.tokenizer, pieces.append, [threading.Event()])
        stream.put(torch.tensor([[0, 1, 2]]))  # the prompt comes first and is skipped
        for start in range(0, len(ids), per_put):
            stream.put(torch.tensor([ids[start : start + per_put]]))
        stream.finish()
        assert stream.ids == ids
        assert "".join(pieces) == loaded.tokenizer.decode(ids, skip_special_tokens=True)


def test_template_in_two_steps_equals_apply_chat_template(loaded: LoadedModel) -> None:
    chat = [{"role": "system", "content": "Be brief."}]
    chat += [
        {"role": "user" if i % 2 == 0 else "assistant", "content": text}
        for i, text in enumerate(TEXTS)
    ]
    expected = loaded.tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    got = _apply_template(loaded, chat)
    assert got["input_ids"] == expected["input_ids"][0].tolist()
    tensors = _as_tensors(got)
    assert set(tensors) == set(expected)
    for key, value in expected.items():
        assert tensors[key].dtype == value.dtype
        assert torch.equal(tensors[key], value)


def test_encode_chat_matches_the_template_for_a_conversation_that_fits(
    loaded: LoadedModel,
) -> None:
    chat = [{"role": "user", "content": t} for t in TEXTS[:1]]
    enc = encode_chat(loaded, chat, GenerationSettings(max_new_tokens=8))
    expected = loaded.tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert torch.equal(enc["input_ids"], expected["input_ids"])
    assert torch.equal(enc["attention_mask"], expected["attention_mask"])


def test_token_stream_gives_the_pieces_text_streamer_gives(loaded: LoadedModel) -> None:
    from transformers import TextStreamer

    class Pieces(TextStreamer):
        def __init__(self) -> None:
            super().__init__(loaded.tokenizer, skip_special_tokens=True)
            self.pieces: list[str] = []

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.pieces.append(text)

    for ids in _ids(loaded):
        reference = Pieces()
        pieces: list[str] = []
        stream = TokenStream(loaded.tokenizer, pieces.append, [threading.Event()])
        stream.put(torch.tensor([[0]]))
        for token in ids:  # the first text goes at once: every token is decoded until then
            reference.put(torch.tensor([token]))  # type: ignore[no-untyped-call]
            stream._text.put([token])  # what each 50 ms decode does, one token at a time
        reference.end()  # type: ignore[no-untyped-call]
        stream._text.end([])
        assert pieces == reference.pieces
