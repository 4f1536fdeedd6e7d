"""The package's layers (DESIGN.md section 2): ``functional`` (pure tensor math) < ``models`` < ``attacks``
< ``defenses``; callbacks use attacks and functional, never defenses. No module imports inside a
function to get around a cycle: every import is at module level, where the layering is visible."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import lit_robust

PACKAGE = Path(lit_robust.__file__).parent


def test_no_import_inside_a_function_or_class():
    nested = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                nested += [
                    f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}: {ast.unparse(inner)}"
                    for inner in ast.walk(node)
                    if isinstance(inner, (ast.Import, ast.ImportFrom))
                ]
    assert sorted(set(nested)) == []


# (package imported next, packages it must not load); run in this order in one fresh interpreter
ABOVE_FUNCTIONAL = ["lightning", "lit_robust.attacks", "lit_robust.defenses", "lit_robust.callbacks"]
LAYERS = [
    ("lit_robust.functional", ABOVE_FUNCTIONAL),
    ("lit_robust.attacks", ["lit_robust.defenses", "lit_robust.callbacks", "lit_robust.cli"]),
    ("lit_robust.callbacks", ["lit_robust.defenses", "lit_robust.cli"]),
]
SCRIPT = textwrap.dedent(
    """
    import importlib, sys
    for package, forbidden in {layers!r}:
        importlib.import_module(package)
        loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
        print(package, "loads", loaded)
    """
)


def test_each_layer_imports_nothing_above_it():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(layers=LAYERS)],
        capture_output=True, text=True, timeout=300, check=False, cwd=PACKAGE.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{package} loads []" for package, _ in LAYERS]
