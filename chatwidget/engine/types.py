"""Value types of the model engine."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from chatwidget.errors import InvalidGenerationRequestError

#: A set of repo ids, or a function that returns one when the engine decides (under its lock),
#: so a caller's latest intent counts, not the intent of when it called.
Names = Collection[str] | Callable[[], Collection[str]]


def resolve_names(names: Names) -> frozenset[str]:
    """The repo ids ``names`` stands for now."""
    return frozenset(names() if callable(names) else names)


class CheckedChat(list[dict[str, str]]):
    """Chat messages whose roles and texts were checked where they were made (a session's
    history refuses bad ones): :func:`~chatwidget.engine.streaming.validate_request` does
    not check them one by one again, which would cost every turn O(messages)."""

    __slots__ = ()


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings for one reply."""

    system_prompt: str = ""
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    do_sample: bool = False


def validate_settings(settings: GenerationSettings) -> None:
    """Raise :class:`InvalidGenerationRequestError` for settings generation would refuse.

    The one rule for both: the widget's settings check calls this too, so a setting it
    accepts is one generation accepts (``temperature=0`` with sampling is refused by both).
    """
    if settings.max_new_tokens < 1:
        raise InvalidGenerationRequestError(
            f"max_new_tokens must be at least 1, got {settings.max_new_tokens}."
        )
    if settings.do_sample and not settings.temperature > 0:
        raise InvalidGenerationRequestError(
            f"temperature must be above 0 when sampling, got {settings.temperature}; "
            "raise it, or turn sampling off for greedy replies."
        )
    if settings.do_sample and not 0 < settings.top_p <= 1:
        raise InvalidGenerationRequestError(f"top_p must be in (0, 1], got {settings.top_p}.")


@dataclass(frozen=True)
class Usage:
    """What one reply cost."""

    model: str
    prompt_tokens: int
    new_tokens: int
    time_to_first_token_s: float | None
    tokens_per_s: float | None
    duration_s: float


@dataclass(frozen=True)
class GenerationResult:
    """A finished reply: full text, whether it was stopped, and its usage."""

    text: str
    stopped: bool
    usage: Usage
    token_ids: tuple[int, ...] = ()  # the new tokens, exactly as generated


@dataclass(frozen=True)
class FitReport:
    """Whether a model fits in memory, and whether it needs a cold swap."""

    repo_id: str
    required_bytes: int
    available_bytes: int
    fits: bool  # fits at all, once everything evictable is unloaded
    fits_beside_loaded: bool  # fits without unloading anything active
    device: str  # "cpu" or "cuda:N"
    message: str = ""


@dataclass(frozen=True)
class LoadReport:
    """What a load did ("Compiling")."""

    repo_id: str
    started_at: float
    duration_s: float
    memory_bytes: int  # memory the model took (RSS delta on CPU, allocated on GPU)
    device_map: dict[str, str]
    cold_swap: bool  # the previous model was unloaded first because both would not fit
    evicted: tuple[str, ...]  # models the warm pool unloaded to make room
    already_loaded: bool = False  # it was warm in the pool: nothing was loaded
    estimated_bytes: int = 0  # the estimate the pool accounts this model with
