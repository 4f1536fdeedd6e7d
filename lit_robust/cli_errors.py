"""A mistake in a config ends in one line: the config key, then the project's own message.

The project's classes check their arguments and raise ``ValueError``, ``TypeError`` or
``FileNotFoundError`` with a message that says what was wrong (``eps must be in [0, 1] ... got 3``).
Built through jsonargparse, that message comes back at the bottom of a 70-line chained traceback,
without saying which entry of the config it was about. :func:`config_key` finds the entry (the
instantiation that raised it, located in the config by its ``class_path`` and arguments) and
:func:`one_line` turns the error into ``robustness.attacks[0].init_args.eps: eps must be in [0, 1] ...``.

The traceback is printed only when the environment variable ``LIT_ROBUST_DEBUG`` is set to a
non-empty value other than ``0``.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

PACKAGE = Path(__file__).resolve().parent
USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
DEBUG_VARIABLE = "LIT_ROBUST_DEBUG"
CONFIG_KEY_ATTRIBUTE = "lit_robust_config_key"  # set on an error by :func:`remember_config_key`


def debugging() -> bool:
    """Whether ``LIT_ROBUST_DEBUG`` asks for full tracebacks."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def frames(traceback: TracebackType | None) -> Iterator[TracebackType]:
    """The entries of ``traceback``, outermost first (the last one is where the error was raised)."""
    while traceback is not None:
        yield traceback
        traceback = traceback.tb_next


def project_error(error: BaseException) -> BaseException | None:
    """The innermost exception in ``error``'s chain that the project raised about its input: a
    ``ValueError``, ``TypeError`` or ``FileNotFoundError`` whose last frame is in ``lit_robust``.
    ``None`` for anything else (a bug, a library's own failure): those keep their traceback."""
    found = None
    for link in chain(error):
        raised_at = list(frames(link.__traceback__))
        if (
            isinstance(link, USER_ERRORS)
            and raised_at
            and _in_project(raised_at[-1].tb_frame.f_code.co_filename)
        ):
            found = link
    return found


def _in_project(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(PACKAGE)


def failed_instantiation(error: BaseException) -> tuple[type, dict[str, Any]] | None:
    """The class and keyword arguments of the innermost jsonargparse instantiation in the traceback
    of ``error`` (the constructor call that raised it), or None."""
    found = None
    for tb in frames(error.__traceback__):
        local = tb.tb_frame.f_locals
        if tb.tb_frame.f_code.co_name == "default_class_instantiator" and isinstance(
            local.get("class_type"), type
        ):
            found = (local["class_type"], dict(local.get("kwargs") or {}))
    return found


def config_key(error: BaseException, config: Mapping[str, Any]) -> str | None:
    """The config entry whose construction raised ``error`` (``robustness.attacks[0].init_args.eps``
    when the message starts with one of its argument names, else ``robustness.attacks[0]``), or None."""
    instantiation = failed_instantiation(error)
    if instantiation is None:
        return None
    cls, kwargs = instantiation
    nodes = _class_nodes(config, "")
    candidates = [(key, node) for key, node in nodes if _resolve(node.get("class_path")) is cls]
    if not candidates:
        return None
    key, node = max(candidates, key=lambda item: _agreement(item[1].get("init_args") or {}, kwargs))
    argument = re.match(r"\w+", str(error))
    init_args = node.get("init_args") or {}
    if argument and argument.group() in init_args:
        return f"{key}.init_args.{argument.group()}"
    return key


def _resolve(class_path: Any) -> Any:
    """The object a config's ``class_path`` names (``lit_robust.attacks.FGSM``), or None."""
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module_name, name = class_path.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None


def _class_nodes(node: Any, key: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every ``{class_path: ..., init_args: ...}`` mapping in a nested config, with its dotted key."""
    if isinstance(node, Mapping):
        if "class_path" in node:
            yield key, node
        for name, value in node.items():
            yield from _class_nodes(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _class_nodes(value, f"{key}[{index}]")


def _agreement(init_args: Mapping[str, Any], kwargs: Mapping[str, Any]) -> int:
    """How many plain values the config's ``init_args`` and the failed call share (to tell two
    entries of one class apart, e.g. two attacks)."""
    plain = (bool, int, float, str, type(None))
    return sum(
        1
        for name, value in init_args.items()
        if isinstance(value, plain) and name in kwargs and kwargs[name] == value
    )


def remember_config_key(error: BaseException, config: Mapping[str, Any]) -> None:
    """Store :func:`config_key` on the project error inside ``error`` (read by :func:`one_line`)."""
    inner = project_error(error)
    key = config_key(inner, config) if inner is not None else None
    if inner is not None and key is not None:
        setattr(inner, CONFIG_KEY_ATTRIBUTE, key)


def one_line(error: BaseException) -> str | None:
    """``<config key>: <message>`` (or the message alone) for a project error inside ``error``;
    None when there is none (the caller re-raises)."""
    inner = project_error(error)
    if inner is None:
        return None
    message = " ".join(str(inner).split())  # one line, whatever the message's own line breaks
    key = getattr(inner, CONFIG_KEY_ATTRIBUTE, None)
    return f"{key}: {message}" if key else message
