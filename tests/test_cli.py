"""``lit-robust`` end to end: every shipped YAML parses, fit then test on the sample, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_robust.cli import LitRobustCLI, main
from lit_robust.defenses import AdversarialTraining
from tests.conftest import CONFIGS, config_args, logged_scalars

COMPLETE = [CONFIGS / "quickstart.yaml", *sorted((CONFIGS / "experiments").glob("*.yaml"))]
GROUPS = sorted(p for group in ("data", "model", "trainer", "eval") for p in (CONFIGS / group).glob("*.yaml"))
BASE = [CONFIGS / "data" / "synthetic.yaml", CONFIGS / "model" / "standard.yaml"]
FAST = [  # shrink the quickstart to seconds
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.log_every_n_steps=1",
    "--model.init_args.attack.init_args.steps=1",
    "--robustness.num_samples=24",
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ and checkpoints land in the test's folder


def test_every_config_is_covered():
    assert set(CONFIGS.rglob("*.yaml")) == set(COMPLETE) | set(GROUPS)


@pytest.mark.parametrize("path", COMPLETE, ids=lambda p: p.name)
def test_complete_configs_parse_and_instantiate(path):
    cli = LitRobustCLI(args=[*config_args(path)], run=False)
    assert cli.model.num_classes == cli.datamodule.num_classes
    assert cli.trainer.max_epochs >= 1


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_group_configs_compose_with_a_base(path):
    cli = LitRobustCLI(args=[*config_args(*BASE, path)], run=False)
    assert cli.model is not None and cli.datamodule is not None


def test_print_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *config_args(CONFIGS / "quickstart.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "lit_robust.defenses.AdversarialTraining" in printed and "inference_mode: false" in printed


@pytest.mark.slow
def test_fit_then_test_on_the_sample(capsys):
    main(["fit", *config_args(CONFIGS / "quickstart.yaml"), *FAST])
    out = capsys.readouterr().out
    assert "robust accuracy, pgd_linf_0.1" in out and "worst case over all attacks" in out
    checkpoints = sorted(Path("runs/quickstart").rglob("best-*.ckpt"))
    assert len(checkpoints) == 1 and checkpoints[0].name in out
    assert {"train/loss", "train/adv_ce", "val/acc", "val/robust_acc/pgd_linf_0.1"} <= logged_scalars(
        Path("runs/quickstart/version_0")
    ).keys()
    assert {"test/acc", "test/robust_acc/fgsm_linf_0.1", "test/worst_case_acc"} <= logged_scalars(
        Path("runs/quickstart/version_0")
    ).keys()

    main(["test", *config_args(CONFIGS / "quickstart.yaml"), *FAST, "--ckpt_path", str(checkpoints[0])])
    assert "robust accuracy, fgsm_linf_0.1" in capsys.readouterr().out
    assert "test/robust_acc/pgd_linf_0.1" in logged_scalars(Path("runs/quickstart/version_1"))
    report = json.loads(Path("runs/quickstart/version_1/report.json").read_text())
    expected = {"clean_acc", "robust_acc", "worst_case_acc", "eps_curves", "minimal_perturbation", "masking"}
    assert expected | {"evaluations", "seed", "versions", "checkpoint"} <= set(report)
    assert set(report["robust_acc"]) == {"fgsm_linf_0.1", "pgd_linf_0.1"}
    assert report["evaluations"][0]["num_samples"] == 24 and report["seed"] == 0
    assert report["checkpoint"] == str(checkpoints[0])
    progress = report["checkpoint_progress"]
    assert progress["epochs_completed"] == progress["max_epochs"] == 1
    assert report["run"] == {"command": "test", "completed": True, "status": "finished"}
    assert "worst case over all attacks" in Path("runs/quickstart/version_1/report.md").read_text()

    restored = AdversarialTraining.load_from_checkpoint(
        checkpoints[0]
    )  # no arguments: CLI checkpoints rebuild
    assert restored.attack.eps == 0.1 and restored.num_classes == 10


def test_unknown_defense_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        LitRobustCLI(args=[*config_args(*BASE), "--model.class_path=NoSuchDefense"], run=False)
    assert "NoSuchDefense" in capsys.readouterr().err


def test_unknown_attack_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad_eval.yaml"
    bad.write_text("robustness:\n  attacks:\n    - class_path: NoSuchAttack\n      init_args: {eps: 0.1}\n")
    with pytest.raises(SystemExit):
        LitRobustCLI(args=[*config_args(*BASE, bad)], run=False)
    assert "NoSuchAttack" in capsys.readouterr().err


@pytest.mark.parametrize("eps", ["8", "-0.1"])
def test_bad_eps_is_a_clear_error(eps):
    args = [*config_args(CONFIGS / "quickstart.yaml"), f"--model.init_args.attack.init_args.eps={eps}"]
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\].*got"):
        LitRobustCLI(args=args, run=False)


def test_missing_data_directory_without_download_is_a_clear_error(tmp_path):
    args = [
        "fit",
        *config_args(CONFIGS / "data" / "mnist.yaml", CONFIGS / "model" / "standard.yaml"),
        f"--data.init_args.data_dir={tmp_path / 'nowhere'}",
    ]
    with pytest.raises(FileNotFoundError, match=r"nowhere.*download=True"):
        main(args)


def test_num_classes_disagreement_is_a_clear_error():
    args = ["fit", *config_args(*BASE), "--model.init_args.network.init_args.num_classes=3"]
    with pytest.raises(ValueError, match=r"num_classes=10"):
        main(args)


def test_checkpointing_follows_the_evaluation_period():
    debug = [CONFIGS / "trainer" / "debug.yaml", CONFIGS / "eval" / "smoke.yaml"]
    main(["fit", *config_args(*BASE, *debug), "--trainer.max_epochs=2", "--robustness.every_n_epochs=2"])
    assert [p.name for p in Path("runs/debug").rglob("best-*.ckpt")] == ["best-epoch=1.ckpt"]


def test_validate_and_predict_run():
    debug = [CONFIGS / "trainer" / "debug.yaml", CONFIGS / "eval" / "smoke.yaml"]
    validated = LitRobustCLI(args=["validate", *config_args(*BASE, *debug)])
    assert {"val/acc", "val/robust_acc/pgd_linf_0.1", "val/worst_case_acc"} <= set(
        validated.trainer.callback_metrics
    )
    predicted = LitRobustCLI(args=["predict", *config_args(*BASE, *debug)])
    batches = predicted.trainer.predict_loop.predictions
    assert len(batches) == 2 and all(b.dtype == torch.long and b.max() < 10 for b in batches)
