"""The README's main job for real: ``lit-robust fit --config configs/quickstart.yaml``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_robust.callbacks import AdversarialExamples, RobustnessEvaluation
from lit_robust.cli import LitRobustCLI

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
IMAGES = ("adversarial_examples/pgd_linf_0.1", "robust_acc_vs_eps/pgd_linf")


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
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert run.is_dir()
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()  # the Images tab: the example grid and the eps curve, at the last epoch and at test
    expected = {f"{stage}/{tag}" for stage in ("val", "test") for tag in IMAGES}
    assert expected <= set(events.Tags()["images"])
    sweep = [
        metrics[f"test/robust_acc/sweep_pgd10_linf_{eps}"] for eps in ("0.05", "0.1", "0.15", "0.2", "0.3")
    ]
    assert sweep == sorted(sweep, reverse=True) and sweep[0] > sweep[-1]


@pytest.mark.parametrize("extra", [[], ["configs/eval/quick.yaml"]])
def test_the_quickstart_and_eval_quick_draw_an_example_grid_and_an_eps_curve(extra, tmp_path, monkeypatch):
    """What the Images tab shows after `make quickstart`, or with `--config configs/eval/quick.yaml`."""
    root = QUICKSTART.parents[1]
    monkeypatch.chdir(tmp_path)
    configs = [str(QUICKSTART), *(str(root / path) for path in extra)]
    cli = LitRobustCLI(args=[arg for path in configs for arg in ("--config", path)], run=False)
    callbacks = cli.trainer.callbacks
    assert any(isinstance(callback, AdversarialExamples) for callback in callbacks)
    sweeps = [c for c in callbacks if isinstance(c, RobustnessEvaluation) and c.name == "eps_sweep"]
    assert len(sweeps) == 1
    assert len({attack.eps for attack in sweeps[0].attacks}) >= 4 and len(sweeps[0].budgets()) >= 4
