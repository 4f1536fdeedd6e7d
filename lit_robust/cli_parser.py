"""The ``lit-robust`` argument parser: a mistake ends in its error and one hint, not a usage dump.

jsonargparse prints the whole usage (40+ lines for ``fit``) before the error, and a wrong argument
inside a class (``--model.init_args.lam`` on a defense without ``lam``) comes back wrapped in every
Union branch it tried. :class:`BriefArgumentParser` prints the message without the usage and without
the ``Given value`` / ``Expected a NoneType`` echo lines, with a suggestion for a mistyped class name,
then where the full list of options is.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

ECHO = ("Given value type:", "Given value:", "Expected a <class 'NoneType'>")


def brief(message: str) -> str:
    """``message`` without the lines that only echo the value back or name the ``None`` branch, plus
    a suggestion for a mistyped class (``did you mean lit_robust.models.SmallCNN?``)."""
    lines = [line for line in message.splitlines() if not any(echo in line for echo in ECHO)]
    return "\n".join(lines + suggestions(message))


def suggestions(message: str) -> list[str]:
    """``did you mean ...?`` for every ``module 'M' has no attribute 'X'`` in ``message``."""
    hints = []
    for module_name, name in re.findall(r"module '([\w.]+)' has no attribute '(\w+)'", message):
        try:
            names = dir(importlib.import_module(module_name))
        except ImportError:
            continue
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            hints.append(f"did you mean {' or '.join(f'{module_name}.{c}' for c in close)}?")
    return hints


class BriefArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with a short error: the message, then ``lit-robust <command> --help``."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a caller that catches the error gets it whole
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {brief(message)}\ntip: {prog} --help lists every option\n")
        raise SystemExit(2)
