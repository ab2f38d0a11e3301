"""`vtdemo.checks.names`: the class filter's rule, by hand."""

from __future__ import annotations

import pytest

from vtdemo.checks import names
from vtdemo.errors import InputError


def test_plain_string_list_and_empty():
    assert names(None, "f") == [] and names("", "f") == []
    assert names("cat", "f") == ["cat"] and names(["cat", "dog"], "f") == ["cat", "dog"]
    with pytest.raises(InputError, match="must be a list of names"):
        names([["nested"]], "f")


def test_names_outside_the_choices_are_refused_in_one_short_line():
    assert names(["cat"], "Classes", ["cat", "dog"]) == ["cat"]
    assert names("dog", "Classes", ("cat", "dog")) == ["dog"]
    with pytest.raises(InputError) as err:
        names(["cat", "x" * 300], "Classes", ["cat", "dog"])
    text = str(err.value)
    assert text == "Classes: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... is not one of its 2 choices"
    assert "\n" not in text and len(text) < 100
