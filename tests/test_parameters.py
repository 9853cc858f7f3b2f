"""Typed config parameters for plugins: strict integers and booleans, errors naming the field."""

from __future__ import annotations

import pytest

from repoman.parameters import bool_parameter, int_parameter


@pytest.mark.parametrize(("raw", "value"), [("4", 4), ("0", 0), ("", 7), ("  ", 7)])
def test_integers(raw: str, value: int) -> None:
    assert int_parameter({"n": raw}, "n", 7) == value


@pytest.mark.parametrize(
    "raw", ["\u0664", "4\n", " 4", "4.0", "1_000", "+4", "0x10", "9" * 5000, "four"]
)
def test_integers_are_ascii_digits_only(raw: str) -> None:
    with pytest.raises(ValueError, match="parameter n: expected an integer"):
        int_parameter({"n": raw}, "n")


def test_negative_integers_are_refused() -> None:
    with pytest.raises(ValueError, match="parameter n: expected an integer >= 0, found -2"):
        int_parameter({"n": "-2"}, "n")


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("FALSE", False), ("", None)])
def test_booleans(raw: str, value: bool | None) -> None:
    assert bool_parameter({"b": raw}, "b") is value
