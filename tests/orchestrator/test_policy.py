"""The memory policy: sizes, durations and counts from arguments and environment variables."""

from __future__ import annotations

import pytest

from chatwidget.errors import InvalidSettingError
from chatwidget.orchestrator import MemoryPolicy
from chatwidget.orchestrator.policy import (
    ENV_KEEP_ALIVE,
    ENV_MAX_LOADED_MODELS,
    ENV_MEMORY_BUDGET,
    parse_duration,
    parse_max_loaded_models,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GB", 8_000_000_000),
        ("8 gb", 8_000_000_000),
        ("1.5GB", 1_500_000_000),
        ("512MiB", 512 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("100", 100),
        ("100B", 100),
        (" 3 TB ", 3 * 1000**4),
        (4096, 4096),
        (2.5e9, 2_500_000_000),
    ],
)
def test_sizes_in_decimal_and_binary_units(text: str | int | float, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["8 gigs", "GB", "-1GB", "0", "", "1e9", True, None, [], "nan"])
def test_a_bad_size_says_what_a_good_one_looks_like(bad: object) -> None:
    with pytest.raises(InvalidSettingError, match="memory_budget") as caught:
        parse_size(bad)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert "8GB" in str(caught.value) or "bytes" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("45s", 45.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("90", 90.0),
        (90, 90.0),
        (0, 0.0),
        (1.5, 1.5),
        (None, None),
        ("never", None),
        ("None", None),
        ("", None),
    ],
)
def test_durations(value: str | float | None, expected: float | None) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("bad", ["10 minutes", "m10", "-5", -5, "1h-30m", True, "ten"])
def test_a_bad_duration_names_the_setting(bad: object) -> None:
    with pytest.raises(InvalidSettingError, match="keep_alive"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_max_loaded_models_is_a_whole_number_from_one() -> None:
    assert parse_max_loaded_models(2) == 2
    assert parse_max_loaded_models("3") == 3
    assert parse_max_loaded_models(None) is None
    assert parse_max_loaded_models("none") is None
    for bad in (0, -1, "0", "two", 1.5, True):
        with pytest.raises(InvalidSettingError, match="max_loaded_models"):
            parse_max_loaded_models(bad)  # type: ignore[arg-type]


def test_environment_variables_set_the_policy_and_arguments_win() -> None:
    env = {ENV_MEMORY_BUDGET: "4GB", ENV_MAX_LOADED_MODELS: "2", ENV_KEEP_ALIVE: "10m"}
    assert MemoryPolicy.from_env(env) == MemoryPolicy(4_000_000_000, 2, 600.0)
    resolved = MemoryPolicy.resolve(memory_budget="1GiB", keep_alive=30, environ=env)
    assert resolved == MemoryPolicy(1024**3, 2, 30.0)
    assert MemoryPolicy.from_env({}) == MemoryPolicy()  # today's defaults


def test_a_bad_environment_variable_is_named_in_the_error() -> None:
    with pytest.raises(InvalidSettingError, match=ENV_KEEP_ALIVE):
        MemoryPolicy.from_env({ENV_KEEP_ALIVE: "soon"})
    with pytest.raises(InvalidSettingError, match=ENV_MEMORY_BUDGET):
        MemoryPolicy.from_env({ENV_MEMORY_BUDGET: "lots"})
    with pytest.raises(InvalidSettingError, match=ENV_MAX_LOADED_MODELS):
        MemoryPolicy.from_env({ENV_MAX_LOADED_MODELS: "0"})
    # an argument does not rescue a bad variable for another setting: the error says which
    with pytest.raises(InvalidSettingError, match=ENV_MEMORY_BUDGET):
        MemoryPolicy.resolve(keep_alive=5, environ={ENV_MEMORY_BUDGET: "lots"})
