"""Model specs and the default catalog of small open instruct models."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chatwidget.errors import InvalidModelSpecError, InvalidRepoIdError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
#: A server name in a remote model key ``"{server}:{model id}"``; ":" never appears in a Hub id.
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REMOTE_SEPARATOR = ":"
_MAX_REMOTE_MODEL_ID = 512

#: Files a model needs to load: config, generation config, tokenizer, chat template, weights.
DEFAULT_ALLOW_PATTERNS: tuple[str, ...] = (
    "*.json",
    "*.safetensors",
    "*.jinja",
    "tokenizer.model",
    "*.txt",
)
#: Duplicate weight formats that loading never needs.
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (
    "*.bin",
    "*.pth",
    "*.pt",
    "*.onnx",
    "*.onnx_data",
    "*.gguf",
    "*.msgpack",
    "*.h5",
    "*.ot",
    "*.tflite",
    "onnx/*",
    "original/*",
)


#: Precisions a model can be loaded in (``ModelSpec.dtype``); "auto" keeps the checkpoint's.
DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32")
#: Weight quantizations (``ModelSpec.quantization``), through bitsandbytes on CUDA.
QUANTIZATIONS: tuple[str | None, ...] = (None, "8bit", "4bit")


def validate_repo_id(repo_id: object) -> str:
    """Return ``repo_id`` if it looks like ``org/name``, else raise :class:`InvalidRepoIdError`."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id.strip()):
        raise InvalidRepoIdError(
            f"{repo_id!r} is not a valid model id: use the form 'org/name', "
            "e.g. 'HuggingFaceTB/SmolLM2-135M-Instruct'."
        )
    name = repo_id.strip()
    if ".." in name or name.endswith((".", "-")):
        raise InvalidRepoIdError(
            f"{repo_id!r} is not a valid model id: '..' and a trailing '.' or '-' are not allowed."
        )
    return name


def remote_key(server: str, model_id: str) -> str:
    """The key of ``model_id`` on ``server``, e.g. ``"gpu:Qwen/Qwen2.5-7B-Instruct"``."""
    return validate_model_key(f"{server}{REMOTE_SEPARATOR}{model_id}")


def split_remote_key(key: str) -> tuple[str, str] | None:
    """``(server, model id)`` of a remote model key, or None for a Hub repo id."""
    server, sep, model_id = key.partition(REMOTE_SEPARATOR)
    return (server, model_id) if sep else None


def validate_model_key(key: object) -> str:
    """Return ``key`` if it is a Hub repo id (``org/name``) or a remote key (``server:model``).

    Raises :class:`InvalidRepoIdError` otherwise.
    """
    if not isinstance(key, str) or REMOTE_SEPARATOR not in key:
        return validate_repo_id(key)
    server, model_id = key.split(REMOTE_SEPARATOR, 1)
    if not SERVER_NAME.match(server):
        raise InvalidRepoIdError(
            f"{key!r} is not a valid remote model key: use 'server:model id', where the server "
            "name is letters, digits, '.', '_' or '-' (e.g. 'gpu:Qwen/Qwen2.5-7B-Instruct')."
        )
    if not model_id.strip() or len(model_id) > _MAX_REMOTE_MODEL_ID or not model_id.isprintable():
        raise InvalidRepoIdError(
            f"{key!r} is not a valid remote model key: the model id after {server + ':'!r} must "
            f"be 1 to {_MAX_REMOTE_MODEL_ID} printable characters, as the server lists it."
        )
    return key


@dataclass(frozen=True)
class ModelSpec:
    """What to download and how to load one model.

    ``repo_id`` is the model key: a Hub repo id, or ``"{server}:{model id}"`` for a model
    served by an OpenAI-compatible server (nothing to download; see ``engine/remote``).
    ``trust_remote_code`` and ``allow_pickle`` are per-model opt-ins and default off:
    only safetensors weights are loaded, and no code from the repo runs.

    ``dtype`` is the precision the weights are loaded in: ``"auto"`` (the checkpoint's own),
    ``"bfloat16"``, ``"float16"`` or ``"float32"``. ``quantization`` is ``None``, ``"8bit"``
    or ``"4bit"`` (bitsandbytes, CUDA only). :mod:`chatwidget.fit` lists the options that
    apply on this machine and what each one needs.
    """

    repo_id: str
    revision: str = "main"
    name: str = ""
    size_bytes: int | None = None
    params: str = ""
    trust_remote_code: bool = False
    allow_pickle: bool = False
    allow_patterns: tuple[str, ...] = DEFAULT_ALLOW_PATTERNS
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE_PATTERNS
    dtype: str = "auto"
    quantization: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        key = validate_model_key(self.repo_id)
        object.__setattr__(self, "repo_id", key)
        if self.dtype not in DTYPES:
            raise InvalidModelSpecError(
                f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}: use 'auto' for the "
                "checkpoint's own precision."
            )
        if self.quantization not in QUANTIZATIONS:
            raise InvalidModelSpecError(
                f"quantization {self.quantization!r} is not one of None, "
                f"{', '.join(repr(q) for q in QUANTIZATIONS if q)}."
            )
        if not self.name:
            parts = split_remote_key(key)
            object.__setattr__(self, "name", parts[1] if parts else key.split("/", 1)[1])

    @property
    def is_remote(self) -> bool:
        """True for a model on an OpenAI-compatible server (key ``"server:model id"``)."""
        return REMOTE_SEPARATOR in self.repo_id

    @classmethod
    def coerce(cls, value: ModelSpec | str) -> ModelSpec:
        """Accept a spec or a bare repo id."""
        return value if isinstance(value, ModelSpec) else cls(repo_id=value)


#: Small open instruct models; sizes are the safetensors weights on the Hub.
DEFAULT_CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        name="SmolLM2 135M Instruct",
        size_bytes=269_060_552,
        params="135M",
    ),
    ModelSpec(
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        name="SmolLM2 360M Instruct",
        size_bytes=723_674_912,
        params="360M",
    ),
    ModelSpec(
        "Qwen/Qwen2.5-0.5B-Instruct",
        name="Qwen2.5 0.5B Instruct",
        size_bytes=988_097_824,
        params="0.5B",
    ),
    ModelSpec(
        "Qwen/Qwen2.5-1.5B-Instruct",
        name="Qwen2.5 1.5B Instruct",
        size_bytes=3_087_467_144,
        params="1.5B",
    ),
)
