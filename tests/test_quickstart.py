"""The README's main job for real: ``lit-robust fit --config configs/quickstart.yaml``."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_robust.cli import LitRobustCLI

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@pytest.mark.slow
def test_quickstart_reaches_its_documented_accuracy(tmp_path, monkeypatch, all_cores, capsys):
    monkeypatch.chdir(tmp_path)
    cli = LitRobustCLI(args=["fit", "--config", str(QUICKSTART)])
    metrics = cli.trainer.callback_metrics  # test_after_fit: the best checkpoint on the test split
    assert metrics["test/acc"] >= 0.95
    assert metrics["test/robust_acc/pgd_linf_0.1"] >= 0.8  # PGD-trained at this eps: it is robust
    assert metrics["test/worst_case_acc"] <= metrics["test/robust_acc/fgsm_linf_0.1"]
    out = capsys.readouterr().out
    assert "Checkpoint:       runs/quickstart/version_0/checkpoints/best-epoch=" in out
    assert (tmp_path / "runs" / "quickstart" / "version_0").is_dir()
