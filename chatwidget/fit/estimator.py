"""How much memory a model needs, per precision option, from its :class:`ModelFacts`.

For one option the need is the sum of:

- **weights**: every tensor's elements times the bytes of the dtype it loads in (float tensors
  take the option's dtype, others stay as stored; 8/4-bit quantize the linear layers);
- **KV cache** for ``context_tokens``: layers x KV heads x head dim x 2 (K and V) x bytes x
  tokens, in the compute dtype;
- **activations**: the working set of one forward pass over a prompt that fills the context
  (the layer's transient tensors per token, plus the last position's logits in fp32);
- **tokenizer**: its vocabulary and merge tables in memory, per vocabulary entry;
- **model overhead**: the module tree's Python objects and the engine's bookkeeping;
- **runtime**, once per process: the transformers stack the first model pulls in.

The constants below were measured on this machine's stack (transformers 5.24, torch 2.13,
CPU, see ``bench/bench_fit.py``, which measures them again): they describe the software, not
any one model, and the same values serve every model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from chatwidget.catalog import ModelSpec
from chatwidget.errors import PrecisionUnavailableError
from chatwidget.fit.dtypes import CASTABLE, SAFETENSORS_BYTES, element_bytes
from chatwidget.fit.facts import ModelFacts, ModelShape

MiB = 1024 * 1024

#: The transformers runtime a process pays once, with its first model: transformers' and
#: tokenizers' code and tables, the architecture's module, the chat-template engine, the
#: generation loop and its streamer thread. Measured as what the smallest model (under 1 MB
#: of weights) adds to a fresh process whose torch is already warm: 116-120 MiB.
RUNTIME_BYTES = 117 * MiB
#: Each model's own fixed cost: its module tree, generation config and engine bookkeeping
#: (a second tiny model costs 0.2-1 MiB).
MODEL_OVERHEAD_BYTES = 2 * MiB
#: A loaded fast tokenizer per vocabulary entry: vocab and merge maps (Rust) and the Python
#: vocab (measured 262-270 B on a 49k-entry BPE tokenizer, loaded a second time).
TOKENIZER_BYTES_PER_TOKEN = 270
#: fp32 copies of the last position's logits a sampling step holds (logits, processed
#: scores, probabilities, and one in flight).
LOGITS_COPIES = 4
#: The context the KV cache is sized for when the caller names none (capped by the model's).
DEFAULT_CONTEXT_TOKENS = 4096
#: bitsandbytes storage per quantized element: int8 plus an fp32 scale per row (added
#: separately), or NF4 (half a byte) plus an fp32 absmax per 64-element block.
INT8_BYTES = 1.0
NF4_BYTES = 0.5 + 4 / 64

#: The precision options, in the order a selector lists them.
OPTIONS: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32", "8bit", "4bit")
DTYPE_OPTIONS: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32")
QUANTIZED_OPTIONS: tuple[str, ...] = ("8bit", "4bit")


@dataclass(frozen=True)
class OptionEstimate:
    """What one precision option needs, in bytes, by part.

    ``model_bytes`` is the model's own need (what a warm pool accounts for it);
    ``required_bytes(runtime_loaded=False)`` adds the once-per-process runtime.
    ``device_bytes`` is the part that goes to an accelerator under ``device_map="auto"``;
    the tokenizer, overhead and runtime stay in RAM.
    """

    option: str  # one of OPTIONS
    dtype: str  # torch dtype the float tensors load in ("auto" resolved)
    quantization: str | None
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    tokenizer_bytes: int
    overhead_bytes: int
    runtime_bytes: int = RUNTIME_BYTES

    @property
    def device_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def host_bytes(self) -> int:
        return self.tokenizer_bytes + self.overhead_bytes

    @property
    def model_bytes(self) -> int:
        return self.device_bytes + self.host_bytes

    def required_bytes(self, *, runtime_loaded: bool) -> int:
        """The model's need, plus the runtime unless this process has loaded it already."""
        return self.model_bytes + (0 if runtime_loaded else self.runtime_bytes)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready parts (bytes)."""
        return {
            "option": self.option,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "activation_bytes": self.activation_bytes,
            "tokenizer_bytes": self.tokenizer_bytes,
            "overhead_bytes": self.overhead_bytes,
            "runtime_bytes": self.runtime_bytes,
            "model_bytes": self.model_bytes,
        }


@dataclass(frozen=True)
class ModelEstimate:
    """One model's needs for every precision option its checkpoint allows.

    ``unsupported`` maps options the checkpoint rules out (an already quantized one) to why.
    """

    repo_id: str
    commit: str | None
    context_tokens: int
    stored_dtype: str | None
    source: str  # where the weights figures came from (facts.SOURCE_*)
    options: tuple[OptionEstimate, ...]
    unsupported: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    facts: ModelFacts | None = field(default=None, repr=False, compare=False)

    def option(self, name: str) -> OptionEstimate:
        """The estimate of option ``name``; KeyError (saying why) if it does not apply."""
        for option in self.options:
            if option.option == name:
                return option
        reason = self.unsupported.get(name, f"it is not one of {', '.join(OPTIONS)}")
        raise KeyError(f"{self.repo_id} has no {name!r} option: {reason}")

    def for_spec(self, spec: ModelSpec) -> OptionEstimate:
        """The estimate for exactly what ``spec`` loads (its dtype and quantization).

        Raises PrecisionUnavailableError when the checkpoint rules that option out.
        """
        name = spec.quantization or spec.dtype
        if name in self.unsupported:
            raise PrecisionUnavailableError(
                f"{self.repo_id} cannot load as {name}: {self.unsupported[name]}. Use dtype='auto'."
            )
        chosen = self.option(name)
        if spec.quantization is None or spec.dtype == "auto" or self.facts is None:
            return chosen
        return option_estimate(self.facts, spec.dtype, spec.quantization, self.context_tokens)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, for rows and events."""
        return {
            "repo_id": self.repo_id,
            "commit": self.commit,
            "context_tokens": self.context_tokens,
            "stored_dtype": self.stored_dtype,
            "source": self.source,
            "options": [o.as_dict() for o in self.options],
            "unsupported": dict(self.unsupported),
            "notes": list(self.notes),
        }


def resolve_dtype(facts: ModelFacts, dtype: str) -> str:
    """The torch dtype ``dtype`` loads float tensors in: ``"auto"`` is the config's dtype, else
    the one most weights are stored in (as transformers decides), else float32."""
    if dtype != "auto":
        return dtype
    if facts.shape is not None and facts.shape.dtype is not None:
        return facts.shape.dtype
    return facts.weights.stored_float_dtype or "float32"


def kv_cache_bytes(shape: ModelShape, tokens: int, dtype: str) -> int:
    """layers x KV heads x head dim x 2 (K and V) x bytes per element x tokens."""
    return int(shape.layers * shape.kv_heads * shape.head_dim * 2 * element_bytes(dtype) * tokens)


def activation_bytes(shape: ModelShape, tokens: int, dtype: str) -> int:
    """The working set of one forward pass over ``tokens`` tokens, in the compute dtype.

    Per token, one layer's transients are alive at a time: the residual and its norm
    (2 x hidden), queries and attention output (2 x heads x head dim), keys and values before
    they join the cache (2 x KV heads x head dim), and the gated MLP's gate, up and product
    (3 x intermediate). Attention itself runs as SDPA, which does not hold the
    tokens x tokens score matrix. Generation keeps only the last position's logits, in fp32.
    """
    per_token = (
        2 * shape.hidden
        + 2 * shape.heads * shape.head_dim
        + 2 * shape.kv_heads * shape.head_dim
        + 3 * shape.intermediate
    )
    logits = LOGITS_COPIES * shape.vocab * 4
    return int(tokens * per_token * element_bytes(dtype)) + logits


def weights_bytes(facts: ModelFacts, dtype: str, quantization: str | None) -> int:
    """Bytes of the weights loaded in ``dtype`` (a torch name), with ``quantization`` if set."""
    weights = facts.weights
    if not weights.numel:  # only file sizes are known: they are the best guess
        return weights.file_bytes
    target = element_bytes(dtype)
    total = 0.0
    for stored, numel in weights.numel.items():
        per_element = target if stored in CASTABLE else SAFETENSORS_BYTES.get(stored, 4)
        total += numel * per_element
    if quantization is not None:
        quantized = min(weights.quantizable_numel, weights.parameters)
        hidden = facts.shape.hidden if facts.shape is not None else 1024
        per_quantized = INT8_BYTES + 4 / hidden if quantization == "8bit" else NF4_BYTES
        total -= quantized * target
        total += quantized * per_quantized
    return int(total)


def option_estimate(
    facts: ModelFacts, dtype: str, quantization: str | None, context_tokens: int
) -> OptionEstimate:
    """The need of one (dtype, quantization) pair at ``context_tokens``."""
    resolved = resolve_dtype(facts, dtype)
    compute = resolved
    if quantization is not None and resolved == "float32":
        compute = "bfloat16" if quantization == "4bit" else "float16"
    shape = facts.shape
    return OptionEstimate(
        option=quantization or dtype,
        dtype=resolved,
        quantization=quantization,
        weights_bytes=weights_bytes(facts, resolved, quantization),
        kv_cache_bytes=kv_cache_bytes(shape, context_tokens, compute) if shape else 0,
        activation_bytes=activation_bytes(shape, context_tokens, compute) if shape else 0,
        tokenizer_bytes=shape.vocab * TOKENIZER_BYTES_PER_TOKEN if shape else 0,
        overhead_bytes=MODEL_OVERHEAD_BYTES,
    )


def context_for(facts: ModelFacts, context_tokens: int | None) -> int:
    """The context the estimate sizes the KV cache for: the caller's, capped by the model's."""
    wanted = context_tokens if context_tokens is not None else DEFAULT_CONTEXT_TOKENS
    if wanted < 1:
        raise ValueError(f"context_tokens must be at least 1, got {wanted}")
    if facts.shape is None:
        return wanted
    return min(wanted, facts.shape.context_length)


def estimate(facts: ModelFacts, *, context_tokens: int | None = None) -> ModelEstimate:
    """Every applicable option's need for a context of ``context_tokens`` tokens
    (default :data:`DEFAULT_CONTEXT_TOKENS`, capped by the model's own context length)."""
    context = context_for(facts, context_tokens)
    notes = list(facts.notes)
    unsupported: dict[str, str] = {}
    shape = facts.shape
    if shape is None:
        notes.append(
            "config.json names no decoder sizes: the KV cache and activations are not counted."
        )
    names: tuple[str, ...] = OPTIONS
    if shape is not None and shape.quantization is not None:
        names = ("auto",)
        why = f"the checkpoint is already quantized ({shape.quantization}); it loads as stored"
        unsupported = {name: why for name in OPTIONS if name != "auto"}
    options = tuple(
        option_estimate(
            facts,
            "auto" if name in QUANTIZED_OPTIONS else name,
            name if name in QUANTIZED_OPTIONS else None,
            context,
        )
        for name in names
    )
    return ModelEstimate(
        repo_id=facts.repo_id,
        commit=facts.commit,
        context_tokens=context,
        stored_dtype=facts.weights.stored_float_dtype,
        source=facts.weights.source,
        options=options,
        unsupported=unsupported,
        notes=tuple(notes),
        facts=facts,
    )


def together(options: Sequence[OptionEstimate]) -> OptionEstimate:
    """Several models loaded at once, as one estimate: their parts add up, the runtime counts
    once. ``judge_option(together([...]), devices)`` says whether they all fit side by side."""
    if not options:
        raise ValueError("together() needs at least one estimate")
    return OptionEstimate(
        option=" + ".join(o.option for o in options),
        dtype=options[0].dtype if len({o.dtype for o in options}) == 1 else "mixed",
        quantization=None,
        weights_bytes=sum(o.weights_bytes for o in options),
        kv_cache_bytes=sum(o.kv_cache_bytes for o in options),
        activation_bytes=sum(o.activation_bytes for o in options),
        tokenizer_bytes=sum(o.tokenizer_bytes for o in options),
        overhead_bytes=sum(o.overhead_bytes for o in options),
        runtime_bytes=max(o.runtime_bytes for o in options),
    )
