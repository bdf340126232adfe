"""How accuracies and durations are written on every page."""

from __future__ import annotations

from fer_core.common.formatting import duration, percent


def test_percent_writes_fractions_and_a_dash_for_missing_figures() -> None:
    assert percent(0.6147) == "61.5%"
    assert percent(1) == "100.0%"
    assert percent(None) == "—"
    assert percent("0.5") == "—"
    assert percent(True) == "—"


def test_duration_switches_to_hours_and_refuses_what_is_not_a_duration() -> None:
    assert duration(0) == "0m 00s"
    assert duration(247.4) == "4m 07s"
    assert duration(3600) == "1h 00m"
    assert duration(22180.2) == "6h 09m"
    for bad in (None, -1, float("nan"), float("inf"), "60", True):
        assert duration(bad) == "—"


def test_numbers_from_json_are_finite_and_never_booleans() -> None:
    from fer_core.common.values import is_count, is_number

    assert is_number(0.5) and is_number(3) and not is_number(True) and not is_number(float("nan"))
    assert not is_number("0.5") and not is_number(None) and not is_number(float("inf"))
    assert is_count(3) and not is_count(3.0) and not is_count(False)
    assert percent(float("nan")) == "—"
