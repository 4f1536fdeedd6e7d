"""The argument checks every public constructor uses: refuse a bad value where it is given.

Each check returns the value (converted to ``float`` / ``int`` where that is the point) and raises
an error that names the parameter, shows the value given and says what is allowed:

* :func:`check_real` — a real number, finite (NaN always refused, ``inf`` only with
  ``allow_inf``), optionally inside a range with open or closed ends;
* :func:`check_int` — an integer (``bool`` and ``5.0`` are refused), optionally inside a range;
* :func:`check_choice` — one of a fixed set of values.

Wrong types raise ``TypeError``, wrong values ``ValueError``::

    >>> check_real("eps", 8, low=0, high=1, low_open=True)
    Traceback (most recent call last):
    ValueError: eps must be in (0, 1], got 8

NaN is the value these checks exist for: ``nan < 0`` and ``nan > 1`` are both false, so a
hand-written ``if not 0 <= x <= 1`` check is the only kind that catches it, and
``if x < 0`` lets it through into attacks that then return NaN images.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any, TypeVar

T = TypeVar("T")
MAX_SEED = 2**64 - 1  # the largest seed torch's generators take


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def _check_bounds(
    name: str, value: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> None:
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise ValueError(f"{name} must be {_interval(low, high, low_open, high_open)}, got {value!r}")


def check_real(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a ``float``, checked to be a finite real number in the given range.

    Args:
        name: the parameter's name, as the user writes it (``"step_size"``).
        value: what was given; ``int``, ``float`` and NumPy scalars are accepted, ``bool`` is not.
        low, high: the range's ends (``None``: unbounded on that side).
        low_open, high_open: exclude the end (``(0, 1]`` is ``low=0, high=1, low_open=True``).
        allow_inf: accept ``+inf`` / ``-inf`` (still subject to the range); NaN is never accepted.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is NaN, infinite (unless allowed) or outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got nan")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    _check_bounds(name, value, low, high, low_open, high_open)
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int``, checked to be an integer in ``[low, high]``.

    ``bool`` and floats (even ``5.0``) are refused, so a YAML typo such as ``steps: 1e3`` or
    ``steps: .nan`` is an error rather than a silently truncated loop count.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value`` is outside ``[low, high]``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    _check_bounds(name, value, low, high, False, False)
    return value


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """``value``, checked to be one of ``choices``.

    Raises:
        ValueError: ``value`` is not one of ``choices`` (the message lists them).
    """
    try:
        allowed = value in choices
    except TypeError:  # unhashable value against a set or dict
        allowed = False
    if not allowed:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_optional_real(name: str, value: Any, *args: Any, **kwargs: Any) -> float | None:
    """:func:`check_real`, or ``None`` when ``value`` is ``None`` (an optional parameter left unset)."""
    return None if value is None else check_real(name, value, *args, **kwargs)


def check_optional_int(name: str, value: Any, *args: Any, **kwargs: Any) -> int | None:
    """:func:`check_int`, or ``None`` when ``value`` is ``None``."""
    return None if value is None else check_int(name, value, *args, **kwargs)
