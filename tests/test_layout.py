"""How the tests are laid out: helpers come from ``tests/helpers.py``, never from ``conftest.py``, and no test
imports ``benchmarks/`` (DESIGN.md, section 4: speed and measurements live there, not in the suite)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# still importing from conftest.py, which re-exports what they use until they are switched
NOT_YET_SWITCHED: set[str] = set()  # test files still importing helpers from tests.conftest


def imported_modules(path: Path) -> set[str]:
    """Every module that ``path`` imports, by its dotted name."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def python_files() -> dict[str, set[str]]:
    return {
        path.relative_to(TESTS).as_posix(): imported_modules(path) for path in sorted(TESTS.rglob("*.py"))
    }


def test_no_test_imports_benchmarks():
    offenders = [
        name
        for name, modules in python_files().items()
        if any(m.split(".")[0] == "benchmarks" for m in modules)
    ]
    assert offenders == []


def test_helpers_are_imported_from_tests_helpers_not_conftest():
    offenders = {name for name, modules in python_files().items() if "tests.conftest" in modules}
    assert offenders <= NOT_YET_SWITCHED, offenders - NOT_YET_SWITCHED


def test_the_scan_sees_imports():
    """The scan itself: the claims test's recipe import and conftest's own import of the helpers are seen."""
    files = python_files()
    assert "tests.helpers" in files["defenses/test_robustness_claims.py"]
    assert "tests.helpers" in files["conftest.py"]
