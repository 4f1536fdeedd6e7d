"""The bad-value family test every package runs over its exported classes.

Every numeric constructor parameter (annotated ``int`` or ``float``, optionally ``| None``) of every
exported class gets NaN, +inf, -inf, -1, 0 and a string. NaN and the string must always be refused
at construction with a ``ValueError`` / ``TypeError`` whose message names the parameter. ``inf``,
negative values and zero must be refused too, unless the package's test lists the parameter as one
that legitimately accepts them (``allows``): those lists are the specification, reviewed with the
code, not a way around the test.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

import pytest

BAD_VALUES: dict[str, Any] = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "negative": -1,
    "zero": 0,
    "string": "abc",
}
ALWAYS_REFUSED = ("nan", "string")
NUMERIC = {"int", "float"}


def numeric_parameters(cls: type) -> list[str]:
    """Names of ``cls.__init__``'s parameters annotated ``int`` / ``float`` (``| None`` allowed)."""
    names = []
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        annotation = parameter.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        members = {member.strip() for member in re.split(r"\|", str(text))} - {"None"}
        if members and members <= NUMERIC:
            names.append(parameter.name)
    return names


def cases(
    classes: Mapping[type, Callable[..., Any]],
) -> Iterator[Any]:
    """``pytest.param(cls, parameter, kind)`` for every class, numeric parameter and bad value."""
    for cls in classes:
        for parameter in numeric_parameters(cls):
            for kind in BAD_VALUES:
                yield pytest.param(cls, parameter, kind, id=f"{cls.__name__}-{parameter}-{kind}")


def check_refused(
    build: Callable[..., Any],
    cls: type,
    parameter: str,
    kind: str,
    allows: Mapping[str, Collection[str]],
) -> None:
    """Build ``cls`` with ``parameter`` set to the bad value ``kind``; it must be refused, naming the
    parameter, unless ``allows[kind]`` lists ``"Class.parameter"`` (or ``"*.parameter"``; a dict of
    reasons keyed by those names works too)."""
    value = BAD_VALUES[kind]
    allowed = kind not in ALWAYS_REFUSED and bool(
        {f"{cls.__name__}.{parameter}", f"*.{parameter}"} & set(allows.get(kind, ()))
    )
    if allowed:
        build(cls, **{parameter: value})  # must simply work
        return
    with pytest.raises((ValueError, TypeError)) as error:
        build(cls, **{parameter: value})
    assert parameter in str(error.value), f"the error does not name {parameter!r}: {error.value}"


def unknown_allowances(classes: Iterable[type], allows: Mapping[str, Collection[str]]) -> set[str]:
    """The entries of ``allows`` that name no numeric parameter of ``classes`` (each would silently
    allow nothing, or hide a renamed parameter)."""
    names = {f"{cls.__name__}.{name}" for cls in classes for name in numeric_parameters(cls)}
    names |= {f"*.{name.split('.')[1]}" for name in names}
    return {entry for entries in allows.values() for entry in entries} - names
