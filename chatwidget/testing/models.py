"""Tiny-model factory: real Llama-architecture causal LMs with a real tokenizer, built offline.

Every model is a ``LlamaForCausalLM`` with random (seeded) weights saved as safetensors, a
BPE tokenizer (SentencePiece-style spaces, printable ASCII) trained on a fixed English corpus
and wrapped by ``PreTrainedTokenizerFast``, a ChatML chat template, and a generation config.
The same ``name``, ``size`` and ``seed`` always give the same bytes.

Replies are readable gibberish, and greedy decoding never picks a special token (their
embeddings are zero), so a reply always runs to ``max_new_tokens``.

Sizes:

- ``"tiny"``: well under 1 MB, for unit tests;
- ``"small"``: about 28 MB in two safetensors shards, so download progress is visible;
- ``"bench"``: SmolLM2-135M's dimensions, about 540 MB in fp32, for benchmarks
  (see :func:`bench_model_path`, which builds it once and caches it).

Command line::

    python -m chatwidget.testing.models build DIR [--size tiny|small|bench] [--name ORG/NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import shutil
import string
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chatwidget.engine.loader import no_progress_bars

logger = logging.getLogger("chatwidget.testing.models")

Size = Literal["tiny", "small", "bench"]
SIZES: tuple[Size, ...] = ("tiny", "small", "bench")

BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
END_OF_TEXT_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (END_OF_TEXT_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)

#: Weight init std: larger than Llama's 0.02, so random models produce varied text.
INIT_RANGE = 0.2

#: ChatML, as used by SmolLM2 and Qwen: system, user and assistant turns, and a generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role'] + '; use system, user or assistant.') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: The fixed corpus the tokenizer is trained on. Changing it changes every model's bytes.
CORPUS: tuple[str, ...] = (
    "Hello! How can I help you today?",
    "The quick brown fox jumps over the lazy dog.",
    "A small model can still say something, even if it makes little sense.",
    "You are a helpful assistant that answers questions clearly and briefly.",
    "What is the capital of France? The capital of France is Paris.",
    "Please explain how a download manager shows progress for each file.",
    "The weather today is sunny with a light breeze from the west.",
    "Models are downloaded from the hub, stored in a cache, and loaded into memory.",
    "Switching models in the middle of a conversation keeps the history intact.",
    "Thank you for your question. Here is a short answer, followed by an example.",
    "Numbers such as 1, 2, 3, 10, 42 and 100 appear in many sentences.",
    "I do not know the answer to that, but I can try to find out.",
    "Write a poem about the sea, the wind and the long summer evenings.",
    "Tokens are pieces of words; a tokenizer splits text into tokens and joins them again.",
    "The user asked a question, and the assistant replied with a friendly message.",
    "Good morning, good afternoon, good evening and good night.",
)


@dataclass(frozen=True)
class Dims:
    """Architecture sizes of one model size."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int
    shard: str | None  # max_shard_size for save_pretrained, None for one file


DIMS: dict[Size, Dims] = {
    "tiny": Dims(32, 2, 4, 2, 64, 320, 512, None),
    "small": Dims(256, 8, 8, 4, 704, 4096, 2048, "15MB"),
    "bench": Dims(576, 30, 9, 3, 1536, 49152, 8192, None),
}

#: Ids of the demo repos (import these in tests rather than from a conftest).
DEMO_TINY_REPO = "demo/tiny-chat"
DEMO_TINY_B_REPO = "demo/tiny-chat-b"
DEMO_SMALL_REPO = "demo/small-chat"
DEMO_GATED_REPO = "gated/tiny-chat"
#: Repos built by :func:`build_demo_hub`: repo id -> (size, seed).
DEMO_REPOS: dict[str, tuple[Size, int]] = {
    DEMO_TINY_REPO: ("tiny", 0),
    DEMO_TINY_B_REPO: ("tiny", 1),
    DEMO_SMALL_REPO: ("small", 0),
    DEMO_GATED_REPO: ("tiny", 2),
}
#: The token that unlocks ``gated/tiny-chat`` on a hub started with :data:`DEMO_GATED`.
DEMO_GATED_TOKEN = "hf_demo_gated_token"
DEMO_GATED: dict[str, str] = {DEMO_GATED_REPO: DEMO_GATED_TOKEN}


def _split_repo(name: str) -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or any(p in {".", ".."} for p in parts):
        raise ValueError(f"model name {name!r} must look like 'org/name', e.g. 'demo/tiny-chat'.")
    return parts[0], parts[1]


#: Characters the tokenizer knows; anything else becomes ``<unk>``. "▁" stands for a space.
ALPHABET: tuple[str, ...] = tuple(
    sorted({*string.ascii_letters, *string.digits, *string.punctuation, "\n", "\t", "\u2581"})
)


def _tokenizer_json(vocab_size: int) -> str:
    """Train a BPE tokenizer on :data:`CORPUS` and pad it to exactly ``vocab_size`` tokens.

    SentencePiece-style: spaces become "▁", characters outside :data:`ALPHABET` become
    ``<unk>``, and every token is printable text, so whatever a random model generates decodes
    to readable (if meaningless) text. The corpus is small, so training stops early; merges of
    existing tokens are then added in a fixed order until the vocabulary is full.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS, UNK_TOKEN],
        initial_alphabet=list(ALPHABET),
        limit_alphabet=len(ALPHABET),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS), trainer=trainer)
    data: dict[str, Any] = json.loads(tok.to_str())
    model = data["model"]
    vocab: dict[str, int] = model["vocab"]
    merges: list[Any] = model["merges"]
    specials = {*SPECIAL_TOKENS, UNK_TOKEN}
    base = sorted((t for t in vocab if t not in specials), key=lambda t: vocab[t])
    i = j = 0
    while len(vocab) < vocab_size:
        left, right = base[i], base[j]
        merged = left + right
        if merged not in vocab:
            vocab[merged] = len(vocab)
            merges.append([left, right])
        j += 1
        if j == len(base):
            i, j = i + 1, 0
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is too small for the base tokenizer")
    return json.dumps(data, ensure_ascii=False)


def _transformers() -> Any:
    """The transformers module, imported lazily and typed loosely (its stubs are partial)."""
    return importlib.import_module("transformers")


def _build_tokenizer(dims: Dims, *, chat_template: bool) -> Any:
    from tokenizers import Tokenizer

    tok = _transformers().PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(dims.vocab)),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=dims.max_positions,
        clean_up_tokenization_spaces=False,
    )
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def llama_config(dims: Dims, tok: Any = None) -> Any:
    """The ``LlamaConfig`` of a model size; with ``tok``, its special token ids too."""
    ids: dict[str, Any] = {}
    if tok is not None:
        ids = {
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        }
    return _transformers().LlamaConfig(
        vocab_size=dims.vocab,
        hidden_size=dims.hidden,
        intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.kv_heads,
        max_position_embeddings=dims.max_positions,
        tie_word_embeddings=True,
        initializer_range=INIT_RANGE,
        **ids,
    )


def _build_model(dims: Dims, tok: Any, seed: int) -> Any:
    import torch

    tf = _transformers()
    cfg = llama_config(dims, tok)
    torch.manual_seed(seed)
    with torch.no_grad():
        model = tf.LlamaForCausalLM(cfg).to(torch.float32)
        # Zero rows give special tokens a logit of 0 while ordinary tokens spread around it, so
        # greedy decoding never picks EOS: replies run to max_new_tokens, predictably.
        special_ids = tok.convert_tokens_to_ids([*SPECIAL_TOKENS, UNK_TOKEN])
        model.get_input_embeddings().weight[special_ids] = 0.0
    model.generation_config = tf.GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return model


def build_model(
    root: Path | str,
    name: str = "test-org/tiny",
    size: Size = "tiny",
    *,
    seed: int = 0,
    chat_template: bool = True,
) -> Path:
    """Write a model repo to ``root/ORG/NAME/`` and return that folder.

    ``chat_template=False`` leaves the template out (to test what happens without one).
    An existing folder is replaced. The same arguments always give the same bytes.
    """
    if size not in DIMS:
        raise ValueError(f"unknown size {size!r}: use one of {', '.join(SIZES)}.")
    org, repo = _split_repo(name)
    dims = DIMS[size]
    target = Path(root) / org / repo
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{repo}.", dir=target.parent))
    try:
        tok = _build_tokenizer(dims, chat_template=chat_template)
        model = _build_model(dims, tok, seed)
        save_kwargs: dict[str, Any] = {"safe_serialization": True}
        if dims.shard is not None:
            save_kwargs["max_shard_size"] = dims.shard
        with no_progress_bars():
            model.save_pretrained(staging, **save_kwargs)
        tok.save_pretrained(staging)
        if not chat_template:
            (staging / "chat_template.jinja").unlink(missing_ok=True)
        (staging / "README.md").write_text(
            f"# {name}\n\nA {size} Llama model with random weights (seed {seed}), "
            "built by chatwidget.testing.models for tests and demos.\n",
            encoding="utf-8",
        )
        if target.exists():
            shutil.rmtree(target)
        staging.chmod(0o755)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("built %s model %s in %s", size, name, target)
    return target


def build_weights_repo(root: Path | str, name: str, size_bytes: int, *, seed: int = 0) -> Path:
    """Write a repo holding one ``model.safetensors`` of about ``size_bytes`` bytes.

    The tensor is deterministic noise; the file is for transfer benchmarks, not for loading.
    """
    import torch
    from safetensors.torch import save_file

    org, repo = _split_repo(name)
    target = Path(root) / org / repo
    target.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    numel = max(1, size_bytes // 4)
    tensor = torch.rand(numel, generator=gen, dtype=torch.float32)
    save_file({"weights": tensor}, str(target / "model.safetensors"), metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps({"model_type": "blob", "numel": numel}) + "\n")
    return target


def build_demo_hub(root: Path | str, *, include_small: bool = True) -> dict[str, Path]:
    """Build the standard demo repos (:data:`DEMO_REPOS`) under ``root``; return id -> folder.

    Repos already present (with a ``config.json``) are kept as they are.
    ``include_small=False`` skips ``demo/small-chat`` for fast test start-up.
    """
    built: dict[str, Path] = {}
    for repo_id, (size, seed) in DEMO_REPOS.items():
        if size == "small" and not include_small:
            continue
        folder = Path(root) / repo_id
        if not (folder / "config.json").is_file():
            build_model(root, repo_id, size, seed=seed)
        built[repo_id] = folder
    return built


def _bench_cache_dir() -> Path:
    env = os.environ.get("CHATWIDGET_BENCH_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "chatwidget" / "bench-model"


def bench_model_path(name: str = "bench/smollm2-135m-random") -> Path:
    """Return the hub root holding the bench model, building it once (about 540 MB).

    The root is ``$CHATWIDGET_BENCH_CACHE`` or ``~/.cache/chatwidget/bench-model``; the model
    is at ``root/ORG/NAME``. A finished build leaves a ``.complete`` marker, so an interrupted
    one is rebuilt.
    """
    root = _bench_cache_dir()
    marker = root / name / ".complete"
    if not marker.is_file():
        build_model(root, name, "bench", seed=0)
        marker.write_text("ok\n")
    return root


def sha256_of(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m chatwidget.testing.models``."""
    parser = argparse.ArgumentParser(prog="python -m chatwidget.testing.models")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a model repo into DIR/ORG/NAME")
    build.add_argument("dir", type=Path)
    build.add_argument("--size", choices=SIZES, default="tiny")
    build.add_argument("--name", default="test-org/tiny", help="repo id, ORG/NAME")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--no-chat-template", action="store_true")
    demo = sub.add_parser("demo", help="build the demo repos into DIR")
    demo.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            path = build_model(
                args.dir,
                args.name,
                args.size,
                seed=args.seed,
                chat_template=not args.no_chat_template,
            )
            sys.stdout.write(f"{path}\n")
        else:
            for path in build_demo_hub(args.dir).values():
                sys.stdout.write(f"{path}\n")
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
