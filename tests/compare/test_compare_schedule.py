"""The schedule rule: memory policy first, then a measured speed floor (plain data)."""

from __future__ import annotations

from chatwidget.compare import MemoryFacts, ProbeBook, decide

A, B = "org/a", "org/b"
MB = 1_000_000


def facts(**changes: object) -> MemoryFacts:
    base: dict[str, object] = {
        "required_bytes": {A: 100 * MB, B: 200 * MB},
        "budget_bytes": 1000 * MB,
        "free_bytes": 4000 * MB,
        "max_loaded_models": None,
        "device": "cpu",
    }
    base.update(changes)
    return MemoryFacts(**base)  # type: ignore[arg-type]


def test_models_over_the_budget_run_one_after_another_in_the_order_shown() -> None:
    s = decide([A, B], facts(budget_bytes=250 * MB), {A: 1.0, B: 1.0})
    assert (s.mode, s.fits_together) == ("sequential", False)
    assert "300.0 MB" in s.reason
    assert "memory budget" in s.reason
    assert "order shown" in s.reason


def test_models_over_free_memory_run_one_after_another() -> None:
    s = decide([A, B], facts(budget_bytes=None, free_bytes=150 * MB), None)
    assert (s.mode, s.fits_together) == ("sequential", False)
    assert "free memory" in s.reason


def test_a_model_limit_below_the_count_runs_them_one_after_another() -> None:
    s = decide([A, B], facts(max_loaded_models=1), {A: 1.0, B: 1.0})
    assert (s.mode, s.fits_together) == ("sequential", False)
    assert "max_loaded_models" in s.reason


def test_an_unknown_size_is_not_assumed_to_fit() -> None:
    s = decide([A, B], facts(required_bytes={A: 1, B: None}), {A: 1.0, B: 1.0})
    assert s.mode == "sequential"
    assert not s.fits_together


def test_on_cpu_without_a_measurement_they_run_one_after_another() -> None:
    s = decide([A, B], facts(), None)
    assert (s.mode, s.fits_together) == ("sequential", True)
    assert "CPU" in s.reason
    assert "0.9x" in s.reason


def test_on_a_gpu_without_a_measurement_they_run_one_after_another() -> None:
    s = decide([A, B], facts(device="cuda:0"), None)
    assert s.mode == "sequential"
    assert "cuda:0" in s.reason
    assert "measured" in s.reason


def test_a_measurement_decides_at_the_floor() -> None:
    assert decide([A, B], facts(), {A: 0.9, B: 0.95}).mode == "concurrent"
    slow = decide([A, B], facts(), {A: 0.89, B: 0.99})
    assert slow.mode == "sequential"
    assert "0.89x" in slow.reason


def test_the_probe_book_keys_by_the_set_of_models() -> None:
    book = ProbeBook()
    book.record({A: 0.5, B: 0.6})
    assert book.lookup([B, A]) == {A: 0.5, B: 0.6}
    assert book.lookup([A]) is None
    book.forget([A, B])
    assert book.lookup([A, B]) is None
