"""The memory policy the user controls, parsed in one place.

Three settings, from ``ChatWidget(...)`` keyword arguments or environment variables (an
argument wins over the variable; a missing one keeps today's default):

- ``memory_budget`` / ``CHATWIDGET_MEMORY_BUDGET``: how much memory loaded models may take,
  as bytes or text such as ``"8GB"``, ``"512MiB"``, ``"1.5 GB"``. Default: half of the memory
  (RAM plus every GPU) free when the engine starts.
- ``max_loaded_models`` / ``CHATWIDGET_MAX_LOADED_MODELS``: how many models may be loaded at
  once, a whole number from 1. Default: no limit beyond the budget.
- ``keep_alive`` / ``CHATWIDGET_KEEP_ALIVE``: a model unused for this long is unloaded, the
  active one included (it loads again on the next message). Seconds, or text such as
  ``"10m"``, ``"1h30m"``, ``"45s"``; ``None`` / ``"never"`` keeps models loaded. Default: never.

Every malformed value raises :class:`~chatwidget.errors.InvalidSettingError` that names the
argument or variable, shows the value and gives examples of valid ones.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from chatwidget.errors import InvalidSettingError

ENV_MEMORY_BUDGET = "CHATWIDGET_MEMORY_BUDGET"
ENV_MAX_LOADED_MODELS = "CHATWIDGET_MAX_LOADED_MODELS"
ENV_KEEP_ALIVE = "CHATWIDGET_KEEP_ALIVE"

_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
    "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_NEVER = frozenset({"", "none", "never", "forever", "off"})

SIZE_EXAMPLES = "e.g. '8GB', '512MiB', '1.5 GB' or a number of bytes"
DURATION_EXAMPLES = "e.g. '10m', '1h30m', '45s', a number of seconds, or None for never"


@dataclass(frozen=True)
class MemoryPolicy:
    """Resolved settings; ``None`` means "today's default" (budget) or "no limit"."""

    memory_budget_bytes: int | None = None
    max_loaded_models: int | None = None
    keep_alive_s: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MemoryPolicy:
        """The policy the three ``CHATWIDGET_*`` variables describe (unset: defaults)."""
        env = os.environ if environ is None else environ
        budget = env.get(ENV_MEMORY_BUDGET)
        count = env.get(ENV_MAX_LOADED_MODELS)
        keep = env.get(ENV_KEEP_ALIVE)
        return cls(
            memory_budget_bytes=None
            if budget is None or not budget.strip()
            else parse_size(budget, name=ENV_MEMORY_BUDGET),
            max_loaded_models=None
            if count is None
            else parse_max_loaded_models(count, name=ENV_MAX_LOADED_MODELS),
            keep_alive_s=None if keep is None else parse_duration(keep, name=ENV_KEEP_ALIVE),
        )

    @classmethod
    def resolve(
        cls,
        *,
        memory_budget: int | str | None = None,
        max_loaded_models: int | str | None = None,
        keep_alive: float | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> MemoryPolicy:
        """Arguments where given (not None), else the environment, else the defaults."""
        base = cls.from_env(environ)
        return cls(
            memory_budget_bytes=base.memory_budget_bytes
            if memory_budget is None
            else parse_size(memory_budget, name="memory_budget"),
            max_loaded_models=base.max_loaded_models
            if max_loaded_models is None
            else parse_max_loaded_models(max_loaded_models, name="max_loaded_models"),
            keep_alive_s=base.keep_alive_s
            if keep_alive is None
            else parse_duration(keep_alive, name="keep_alive"),
        )


def parse_size(value: int | float | str, *, name: str = "memory_budget") -> int:
    """Bytes from ``8_000_000_000``, ``"8GB"`` (powers of 1000) or ``"8GiB"`` (powers of 1024)."""
    if isinstance(value, bool):
        raise InvalidSettingError(f"{name}={value!r} is not a size: use {SIZE_EXAMPLES}.")
    if isinstance(value, int | float):
        number, unit = float(value), 1
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None or match.group(2).lower() not in _SIZE_UNITS:
            raise InvalidSettingError(f"{name}={value!r} is not a size: use {SIZE_EXAMPLES}.")
        number, unit = float(match.group(1)), _SIZE_UNITS[match.group(2).lower()]
    else:
        raise InvalidSettingError(
            f"{name} must be a number of bytes or text ({SIZE_EXAMPLES}), "
            f"not {type(value).__name__}."
        )
    if not math.isfinite(number) or number * unit < 1:
        raise InvalidSettingError(f"{name}={value!r} must be a positive size: use {SIZE_EXAMPLES}.")
    return int(number * unit)


def parse_duration(value: float | str | None, *, name: str = "keep_alive") -> float | None:
    """Seconds from ``600``, ``"10m"``, ``"1h30m"``, ``"45s"``; None (or "never"): never."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidSettingError(f"{name}={value!r} is not a duration: use {DURATION_EXAMPLES}.")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in _NEVER:
            return None
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_duration_text(text, name, value)
    else:
        raise InvalidSettingError(
            f"{name} must be seconds, text ({DURATION_EXAMPLES}), not {type(value).__name__}."
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidSettingError(
            f"{name}={value!r} must be zero or more seconds, or None to keep models loaded."
        )
    return seconds


def _parse_duration_text(text: str, name: str, original: str) -> float:
    compact = text.replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise InvalidSettingError(
            f"{name}={original!r} is not a duration: use {DURATION_EXAMPLES}."
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_max_loaded_models(
    value: int | str | None, *, name: str = "max_loaded_models"
) -> int | None:
    """A whole number from 1, or None (also ``""``, "none") for no limit."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _NEVER:
            return None
        if not re.fullmatch(r"\d+", text):
            raise InvalidSettingError(
                f"{name}={value!r} is not a whole number: use e.g. 1, 2 or 3 (or None: no limit)."
            )
        number = int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InvalidSettingError(
            f"{name} must be a whole number from 1 (or None: no limit), not {value!r}."
        )
    if number < 1:
        raise InvalidSettingError(
            f"{name}={value!r} must be at least 1 (or None: no limit): one model must fit."
        )
    return number
