"""``benchmarks/reference_loops.py --smoke`` runs end to end, writes both algorithms; a re-run reuses them.

The script runs as a subprocess (tests never import ``benchmarks/``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_loops.py"
ALGORITHMS = ("pgd_at", "trades")


def run_smoke(out: Path) -> str:
    """Run the smoke budget into ``out``; returns its stdout (fails the test on a non-zero exit)."""
    command = [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--results", str(out / "no_board")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=80, cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_smoke_run_writes_both_algorithms_and_a_rerun_skips_them(tmp_path):
    first = run_smoke(tmp_path)
    report = json.loads((tmp_path / "reference_loops.json").read_text())
    assert set(report["algorithms"]) == set(ALGORITHMS)
    for algorithm in ALGORITHMS:
        entry = report["algorithms"][algorithm]
        assert f"{algorithm} epoch 1/1 loss" in first
        for key in ("clean_acc", "pgd40_acc", "autoattack_acc"):
            assert 0.0 <= entry[key] <= 1.0, (algorithm, key, entry[key])
        assert (entry["epochs"], entry["n_eval"], entry["n_clean"]) == (1, 32, 1000)
    table = (tmp_path / "reference_loops.md").read_text()
    assert "| pgd_at |" in table and "| trades |" in table and "n/a" in table  # no leaderboard rows here

    second = run_smoke(tmp_path)
    for algorithm in ALGORITHMS:
        assert f"{algorithm}: skipped" in second
    assert "epoch" not in second
    assert json.loads((tmp_path / "reference_loops.json").read_text()) == report
