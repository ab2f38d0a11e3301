"""`vtdemo.checks.number` / `whole`: what a refused number's line says, by hand."""

from __future__ import annotations

import math

import pytest

from vtdemo.checks import number, whole
from vtdemo.errors import InputError


@pytest.mark.parametrize(
    "value, said",
    [
        (-5, "Opacity must be a number from 0 to 1, not -5"),  # out of range: not called "not finite"
        ("2", "Opacity must be a number from 0 to 1, not '2'"),
        (math.nan, "Opacity must be a finite number from 0 to 1, not nan"),
        ("inf", "Opacity must be a finite number from 0 to 1, not 'inf'"),
        ("abc", "Opacity must be a number from 0 to 1, not 'abc'"),
    ],
)
def test_a_refused_number_says_why(value, said):
    with pytest.raises(InputError) as refused:
        number(value, "Opacity", 0, 1)
    assert str(refused.value) == said


def test_in_range_and_whole():
    assert number("0.5", "x", 0, 1) == 0.5 and whole(3.0, "n", 1, 5) == 3
    with pytest.raises(InputError, match="must be a whole number"):
        whole(2.5, "n", 1, 5)
    with pytest.raises(InputError, match="^n must be a number from 1 to 5, not 17$"):
        whole(17, "n", 1, 5)
