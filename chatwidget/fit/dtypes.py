"""The one table of element sizes: safetensors dtype names and torch / config dtype names."""

from __future__ import annotations

#: Bytes per element of each safetensors dtype (sub-byte formats as fractions).
SAFETENSORS_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F6_E2M3": 0.75, "F6_E3M2": 0.75, "F4": 0.5,
}  # fmt: skip
#: Stored dtypes that ``from_pretrained(dtype=...)`` casts; the others load as they are.
CASTABLE = frozenset({"F64", "F32", "F16", "BF16"})
#: torch dtype names (as ``config.json`` and ``ModelSpec.dtype`` spell them) -> safetensors name.
TORCH_TO_SAFETENSORS: dict[str, str] = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "float": "F32", "half": "F16", "double": "F64",
}  # fmt: skip
#: safetensors name -> the torch dtype name the options use.
SAFETENSORS_TO_TORCH: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
}  # fmt: skip


def torch_name(name: str) -> str | None:
    """The canonical torch name of a dtype given either way ("BF16", "bfloat16", "half")."""
    if name in SAFETENSORS_TO_TORCH:
        return SAFETENSORS_TO_TORCH[name]
    stored = TORCH_TO_SAFETENSORS.get(name)
    return SAFETENSORS_TO_TORCH[stored] if stored is not None else None


def element_bytes(name: str) -> float:
    """Bytes per element of a dtype given as a safetensors or torch name.

    Raises ValueError for a name neither table knows.
    """
    if name in SAFETENSORS_BYTES:
        return SAFETENSORS_BYTES[name]
    stored = TORCH_TO_SAFETENSORS.get(name)
    if stored is None:
        raise ValueError(f"unknown dtype {name!r}")
    return SAFETENSORS_BYTES[stored]
