"""Interruption and failure are visible: a terminated or diverged run exits non-zero, says so, and
leaves a report that says it did not complete; a report is never half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from torch import Tensor, nn

from lit_robust.attacks.base import Attack, ThreatModel
from lit_robust.cli import SIGTERM_EXIT_CODE, main
from lit_robust.report import write_atomic
from tests.helpers import CONFIGS, config_args

ROOT = Path(__file__).resolve().parents[1]
BASE = [*config_args(CONFIGS / "data" / "synthetic.yaml", CONFIGS / "model" / "standard.yaml")]
DEBUG = [*config_args(CONFIGS / "trainer" / "debug.yaml"), "--trainer.enable_progress_bar=false"]
SELF_TERMINATING = [
    "--robustness.attacks+=tests.test_interruption.SelfTerminatingAttack",
    "--robustness.attacks+=lit_robust.attacks.FGSM",
    "--robustness.attacks.eps=0.1",
    "--robustness.batch_size=8",
    "--robustness.num_samples=32",
]


class SelfTerminatingAttack(Attack):
    """Sends SIGTERM to its own process, as a cluster scheduler would, in the middle of an attack."""

    threat_model = ThreatModel.LINF
    short_name = "self_terminating"
    calls = 0

    def __init__(self, eps: float = 0.1):
        super().__init__(eps)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        type(self).calls += 1
        os.kill(os.getpid(), signal.SIGTERM)
        return x


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SelfTerminatingAttack.calls = 0


def read_report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def test_sigterm_during_the_attacks_of_fit_exits_143_and_stops_at_once(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *BASE, *DEBUG, *SELF_TERMINATING, "--trainer.max_epochs=3"])
    assert stopped.value.code == SIGTERM_EXIT_CODE
    assert SelfTerminatingAttack.calls == 1  # stopped before the next batch of the subset
    assert "lit-robust fit: terminated by SIGTERM at epoch 0" in capsys.readouterr().err
    report = read_report(Path("runs/debug/version_0"))
    assert report["run"]["completed"] is False and "SIGTERM" in report["run"]["status"]
    assert "robust_acc" not in report
    assert "did not complete" in Path("runs/debug/version_0/report.md").read_text()


def test_sigterm_during_test_exits_143_with_no_results(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["test", *BASE, *DEBUG, *SELF_TERMINATING])
    assert stopped.value.code == SIGTERM_EXIT_CODE
    assert "lit-robust test: terminated by SIGTERM" in capsys.readouterr().err
    assert read_report(Path("runs/debug/version_0"))["run"] == {
        "command": "test",
        "completed": False,
        "status": "terminated by SIGTERM",
    }


@pytest.mark.slow
def test_the_console_script_exits_143_on_sigterm(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "lit_robust.cli", "test", *BASE, *DEBUG, *SELF_TERMINATING]
    finished = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert finished.returncode == SIGTERM_EXIT_CODE, finished.stderr[-2000:]
    assert "terminated by SIGTERM" in finished.stderr


def test_a_completed_report_says_so():
    main(["test", *BASE, *DEBUG, *config_args(CONFIGS / "eval" / "smoke.yaml")])
    report = read_report(Path("runs/debug/version_0"))
    assert report["run"] == {"command": "test", "completed": True, "status": "finished"}
    assert "Run: `test` finished." in Path("runs/debug/version_0/report.md").read_text()


def test_a_report_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text('{"old": true}\n')

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, '{"new": true}\n' * 1000)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left
    monkeypatch.undo()
    write_atomic(path, '{"new": true}\n')
    assert json.loads(path.read_text()) == {"new": True}


def test_yaml_nan_and_inf_are_refused_by_the_cli(capsys):
    quickstart = config_args(CONFIGS / "quickstart.yaml")
    with pytest.raises(SystemExit):
        main(["fit", *quickstart, "--model.init_args.attack.init_args.step_size=.nan"])
    assert "step_size: step_size must be a number, got nan" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", *quickstart, "--model.init_args.attack.init_args.eps=.inf"])
    assert "init_args.eps: eps must be finite, got inf" in capsys.readouterr().err
