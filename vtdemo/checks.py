"""Checking parameter values that come from people and programs: one readable line for anything off.

Used wherever a value enters vtdemo (the CLI's flags, the Python API, the app's components), so that a NaN, an
infinite or huge number, a string where a number belongs, or an unknown name is refused with a message that says what
is allowed, instead of being silently wrong (`score >= nan` keeps nothing) or failing deep inside with a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .errors import InputError


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def number(value: Any, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> float:
    """`value` as a finite float within [lo, hi] (or (lo, hi] with `lo_open`); else `InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{name} must be a number{_range(lo, hi, lo_open)}, not {_show(value)}")
    try:
        x = float(value)
    except ValueError:
        raise InputError(f"{name} must be a number{_range(lo, hi, lo_open)}, not {_show(value)}") from None
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite number{_range(lo, hi, lo_open)}, not {_show(value)}")
    if (lo is not None and (x < lo or (lo_open and x == lo))) or (hi is not None and x > hi):
        raise InputError(f"{name} must be a number{_range(lo, hi, lo_open)}, not {_show(value)}")
    return x


def whole(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as an int within [lo, hi] (a float must be integral: 3.0 is fine, 2.5 is not)."""
    x = number(value, name, lo, hi)
    if x != int(x):
        raise InputError(f"{name} must be a whole number{_range(lo, hi)}, not {_show(value)}")
    return int(x)


def one_of(value: Any, name: str, allowed: Iterable[str]) -> str:
    """`value` if it is one of `allowed` (exact match), else `InputError` listing them."""
    options = list(allowed)
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{name} must be one of {', '.join(options)}; not {_show(value)}")
    return value


def names(value: Any, name: str, allowed: Iterable[str] | None = None) -> list[str]:
    """A list of names: None or "" is empty, a plain string is a one-element list, else a list of strings; with
    `allowed`, each must be one of them (the refusal names the first stranger, shortened, and how many there are)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [value]
    if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        raise InputError(f"{name} must be a list of names (or one name), not {_show(value)}")
    if allowed is not None:
        known = set(allowed)
        stranger = next((v for v in value if v not in known), None)
        if stranger is not None:
            raise InputError(f"{name}: {_show(stranger)} is not one of its {len(known)} choices")
    return list(value)


def flag(value: Any, name: str) -> bool:
    """A true/false value: a bool (or 0 / 1); anything else is refused rather than read as 'truthy'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InputError(f"{name} must be true or false, not {_show(value)}")


def _range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    def fmt(v: float) -> str:
        return f"{v:g}"

    if lo is not None and hi is not None:
        return f" {'above' if lo_open else 'from'} {fmt(lo)} {'and at most' if lo_open else 'to'} {fmt(hi)}"
    if lo is not None:
        return f" {'above' if lo_open else 'of at least'} {fmt(lo)}"
    if hi is not None:
        return f" of at most {fmt(hi)}"
    return ""
