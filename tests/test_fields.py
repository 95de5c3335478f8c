"""One reading of typed fields for the wire, the device config and the site file."""

from __future__ import annotations

import pytest

from panicbutton.fields import read_field


def fail(problem: str) -> ValueError:
    return ValueError(f"x.n {problem}")


def test_a_whole_number_is_read_and_true_is_not_one() -> None:
    assert read_field({"n": 3}, "n", int, fail) == 3
    with pytest.raises(ValueError, match=r"^x\.n must be int, got True$"):
        read_field({"n": True}, "n", int, fail)


def test_a_whole_number_is_also_a_float_but_not_a_string() -> None:
    assert read_field({"n": 2}, "n", float, fail) == 2.0
    with pytest.raises(ValueError, match=r"^x\.n must be a number, got '2'$"):
        read_field({"n": "2"}, "n", float, fail, kind_name="a number")


def test_an_absent_key_is_missing_unless_it_has_a_default() -> None:
    with pytest.raises(ValueError, match=r"^x\.n is missing$"):
        read_field({}, "n", str, fail)
    assert read_field({}, "n", str, fail, default=None) is None
    with pytest.raises(ValueError, match=r"^x\.n must be str, got None$"):
        read_field({"n": None}, "n", str, fail, default="")
