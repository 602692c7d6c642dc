"""Generation settings as the user changes them: one validation for Python and the front end.

The bounds here and the defaults of :class:`~chatwidget.engine.types.GenerationSettings`
reach the front end through the generated ``js/src/protocol.ts``, so both sides agree. A
change that generation would refuse (``temperature=0`` with sampling) is refused here with
the engine's own words (:func:`chatwidget.engine.types.validate_settings`).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, NamedTuple

from chatwidget.engine.types import GenerationSettings, validate_settings
from chatwidget.errors import InvalidGenerationRequestError


class Bounds(NamedTuple):
    """Inclusive range of a numeric setting, and the step the UI offers."""

    min: float
    max: float
    step: float
    integer: bool


#: The numeric settings' ranges.
SETTING_BOUNDS: dict[str, Bounds] = {
    "max_new_tokens": Bounds(1, 32768, 1, True),
    "temperature": Bounds(0.0, 5.0, 0.05, False),
    "top_p": Bounds(0.01, 1.0, 0.01, False),
}

SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GenerationSettings))


def settings_dict(settings: GenerationSettings) -> dict[str, Any]:
    """The settings as a plain dict (trait ``settings``)."""
    return asdict(settings)


def settings_from(current: GenerationSettings, changes: dict[str, Any]) -> GenerationSettings:
    """Apply a partial change from Python or the front end; raise ValueError if invalid."""
    unknown = set(changes) - set(SETTING_NAMES)
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}; known: {sorted(SETTING_NAMES)}.")
    new = {**settings_dict(current), **changes}
    if not isinstance(new["system_prompt"], str):
        raise ValueError("system_prompt must be text.")
    if not isinstance(new["do_sample"], bool):
        raise ValueError("do_sample must be true or false.")
    for name, bounds in SETTING_BOUNDS.items():
        value = new[name]
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = whole or isinstance(value, float)
        if not number or (bounds.integer and not whole) or not bounds.min <= value <= bounds.max:
            kind = "a whole number" if bounds.integer else "a number"
            low, high = (int(bounds.min), int(bounds.max)) if bounds.integer else bounds[:2]
            raise ValueError(f"{name} must be {kind} from {low} to {high}.")
        new[name] = int(value) if bounds.integer else float(value)
    settings = GenerationSettings(**new)
    try:
        validate_settings(settings)
    except InvalidGenerationRequestError as exc:
        raise ValueError(str(exc)) from None
    return settings
