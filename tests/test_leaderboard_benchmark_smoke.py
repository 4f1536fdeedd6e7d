"""``benchmarks/leaderboard.py --smoke``: two rows trained, scored and compared end to end, an
evaluation-only row that scores the first row's network with TVM in front, and a two-point weight sweep
(validated first by ``--validate-only``) whose chosen point alone is scored on test, from its results
folder alone (as in a fresh clone, which has no fit); a re-run skips them; the committed weights
re-score to the same numbers without training.

The script runs as a subprocess (tests never import ``benchmarks/``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_robust.cli import main
from lit_robust.loading import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "leaderboard.py"
ROWS = ("standard", "pgd_at", "standard_tvm", "input_gradient_lam1")
UNTESTED = "input_gradient_lam0.1"  # the sweep's other point: neither chosen (a tie) nor the paper's
FILES = ("config.yaml", "eval.yaml", "report.json", "report.md", "row.json", "weights.safetensors")


def run_benchmark(tmp_path: Path, *extra: str) -> str:
    command = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path / "out")]
    command += ["--runs", str(tmp_path / "runs"), *extra]
    # a hang guard only: five rows take minutes on 2 shared cores
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_smoke_benchmark_scores_both_rows_a_rerun_skips_them_and_the_weights_rescore(tmp_path, monkeypatch):
    out = tmp_path / "out"
    validated = run_benchmark(tmp_path, "--validate-only")  # the sweep's points alone, no test
    assert sorted(p.name for p in out.iterdir() if (p / "row.json").is_file()) == [UNTESTED, ROWS[-1]]
    assert not list(out.glob("*/report.json")) and "standard" not in validated
    shutil.rmtree(tmp_path / "runs" / ROWS[-1])  # a clone has the results folder, not the fit
    first = run_benchmark(tmp_path)
    for row in ROWS:
        assert f"{row}: done" in first
        assert sorted(p.name for p in (out / row).iterdir()) == sorted(FILES)
        record = json.loads((out / row / "row.json").read_text())
        test = record["commands"]["test"]  # scores the folder's weights: anyone can rerun it from a clone
        assert test.startswith("lit-robust test --config ")
        assert f"--model.init_args.init_from={out / row / 'weights.safetensors'}" in test
        assert record["threads"] >= 1 and record["versions"]["torch"] == torch.__version__.split("+")[0]
        assert record["test_cpu_seconds"] > 0 and record["fit_cpu_seconds"] >= 0  # the cores each had
        report = json.loads((out / row / "report.json").read_text())
        assert report["run"]["completed"] and report["checkpoint_progress"]["train_seconds"] > 0
        assert "autoattack_linf_0.3" in report["robust_acc"]
        assert ("pgd_linf_0.3_paper" in report["robust_acc"]) is (
            row != "standard_tvm"
        )  # smoke_eval_tvm.yaml
    chosen, other = (json.loads((out / row / "row.json").read_text()) for row in (ROWS[-1], UNTESTED))
    assert chosen["selected"] and chosen["tested"] and "select" in chosen["commands"]
    assert not other["selected"] and not other["tested"] and "test" not in other["commands"]
    assert other["validation_worst_case_acc"] == chosen["validation_worst_case_acc"] == 0.0
    assert sorted(p.name for p in (out / UNTESTED).iterdir()) == sorted(
        set(FILES) - {"report.json", "report.md"}
    )
    tvm = json.loads((out / "standard_tvm" / "row.json").read_text())
    assert tvm["scores"] == "standard" and "fit" not in tvm["commands"]  # it trained nothing
    scored, trained = (load_file(out / row / "weights.safetensors") for row in ("standard_tvm", "standard"))
    assert scored.keys() == trained.keys() and all(torch.equal(scored[k], trained[k]) for k in trained)
    assert "TotalVariationMinimization" in (out / "standard_tvm" / "eval.yaml").read_text()
    board = (out / "leaderboard.md").read_text()
    assert "| pgd_at | AdversarialTraining (SmallCNN) |" in board and "| standard |" in board
    assert f"| `{UNTESTED}` | validated only: neither its sweep's choice nor the paper's setting" in board
    assert (out / "clean_vs_autoattack.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "leaderboard.json").read_text())["headline"] == "autoattack_linf_0.3"

    second = run_benchmark(tmp_path)
    assert second.count("finished earlier") == len(ROWS) + 1 and "running" not in second
    check_rescore(out / "standard", tmp_path / "rescore", monkeypatch)


def check_rescore(row: Path, log_dir: Path, monkeypatch) -> None:
    """``lit-robust test --config config.yaml --config eval.yaml --model.init_args.init_from
    weights.safetensors`` (the command each row's folder documents) gives the row's own numbers:
    the weights file is what was scored."""
    scored = json.loads((row / "report.json").read_text())
    weights = load_file(row / "weights.safetensors")
    assert weights and all(not name.startswith("network.") for name in weights)
    monkeypatch.chdir(ROOT)
    main([
        "test", "--config", str(row / "config.yaml"), "--config", str(row / "eval.yaml"),
        f"--model.init_args.init_from={row / 'weights.safetensors'}",
        f"--trainer.logger.init_args.save_dir={log_dir}",
    ])  # fmt: skip
    rescored = json.loads(next(log_dir.rglob("report.json")).read_text())
    assert rescored["clean_acc"] == scored["clean_acc"]
    assert rescored["robust_acc"] == scored["robust_acc"]
    assert rescored["checkpoint_progress"] == scored["checkpoint_progress"]  # the weights' metadata
