"""``lit-robust`` end to end: every shipped YAML parses, fit then test on the sample, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import Namespace
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lit_robust.cli import LitRobustCLI, data_facts, fill_network_arguments, main
from lit_robust.data import SyntheticDataModule
from lit_robust.defenses import AdversarialTraining, StandardTraining
from tests.helpers import CONFIGS, config_args, logged_scalars

COMPLETE = [CONFIGS / "quickstart.yaml", *sorted((CONFIGS / "experiments").glob("*.yaml"))]
GROUPS = sorted(
    p
    for group in ("data", "model", "network", "adversary", "trainer", "eval")
    for p in (CONFIGS / group).glob("*.yaml")
)
BASE = [CONFIGS / "data" / "synthetic.yaml", CONFIGS / "model" / "standard.yaml"]
FAST = [  # shrink the quickstart to seconds
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.log_every_n_steps=1",
    "--model.init_args.attack.init_args.steps=1",
    "--robustness.num_samples=24",
    "--trainer.callbacks=[]",  # no example grid or eps sweep (test_quickstart.py has them)
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


# a pretrained network loads its weights when built (tests/models/test_robustbench_model.py gives it some)
NEEDS_WEIGHTS = {CONFIGS / "network" / "robustbench.yaml"}
COMPOSABLE = sorted(set(GROUPS) - NEEDS_WEIGHTS)


@pytest.mark.parametrize("path", COMPOSABLE, ids=lambda p: f"{p.parent.name}/{p.name}")
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
    assert expected | {"evaluations", "seed", "versions", "checkpoint", "architecture"} <= set(report)
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


def test_a_config_files_stale_ckpt_path_is_a_clear_error(tmp_path, capsys):
    """A resumed fit's ``config.yaml`` keeps the ``ckpt_path`` it resumed from; scored elsewhere (a clone
    without that file), the error says where the path came from and how to score ``init_from``."""
    stale = tmp_path / "config.yaml"
    stale.write_text("ckpt_path: runs/gone/fit/checkpoints/last.ckpt\n")
    with pytest.raises(SystemExit):
        main(["test", *config_args(CONFIGS / "quickstart.yaml", stale)])
    err = capsys.readouterr().err
    assert "no checkpoint at 'runs/gone/fit/checkpoints/last.ckpt'" in err
    assert "a --config file's 'ckpt_path:' counts too" in err and "--ckpt_path=null" in err


def test_missing_data_directory_is_one_line_and_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        *config_args(CONFIGS / "data" / "mnist.yaml", CONFIGS / "model" / "standard.yaml"),
        f"--data.init_args.data_dir={tmp_path / 'nowhere'}",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"lit-robust: error: MNIST not found in .*nowhere.*download=True", err)
    assert "Traceback" not in err and "folder it made (runs/lit_robust/version_0) was removed" in err
    assert not Path("runs").exists()  # failed in setup: nothing trained, nothing kept


def test_a_refused_value_names_its_config_key_and_the_traceback_is_one_variable_away(monkeypatch, capsys):
    args = ["fit", *config_args(CONFIGS / "quickstart.yaml"), "--model.init_args.attack.init_args.eps=8"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("lit-robust: error: model.init_args.attack.init_args.eps: eps must be in")
    assert err[-2].endswith("got 8") and err[-1] == "(set LIT_ROBUST_DEBUG=1 for the traceback)"
    monkeypatch.setenv("LIT_ROBUST_DEBUG", "1")
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\]"):
        main(args)


def test_two_attacks_of_one_class_are_told_apart_by_their_arguments(tmp_path, capsys):
    bad = tmp_path / "bad_eval.yaml"
    bad.write_text(
        "robustness:\n  attacks:\n"
        "    - {class_path: lit_robust.attacks.FGSM, init_args: {eps: 0.1}}\n"
        "    - {class_path: lit_robust.attacks.FGSM, init_args: {eps: 3.0, name: big}}\n"
    )
    with pytest.raises(SystemExit):
        main(["fit", *config_args(*BASE, bad)])
    assert "error: robustness.attacks[1].init_args.eps: eps must be in [0, 1]" in capsys.readouterr().err


def test_num_classes_disagreement_is_a_clear_error(capsys):
    args = ["fit", *config_args(*BASE), "--model.init_args.network.init_args.num_classes=3"]
    with pytest.raises(SystemExit):
        main(args)
    assert re.search(r"lit-robust: error: .*num_classes=10", capsys.readouterr().err)


def test_checkpointing_follows_the_evaluation_period(capsys):
    debug = [CONFIGS / "trainer" / "debug.yaml", CONFIGS / "eval" / "smoke.yaml"]
    main(["fit", *config_args(*BASE, *debug), "--trainer.max_epochs=2", "--robustness.every_n_epochs=2"])
    assert [p.name for p in Path("runs/debug").rglob("best-*.ckpt")] == ["best-epoch=1.ckpt"]
    # fit without test_after_fit does not end silently: it says where the weights are and how to test them
    out = capsys.readouterr().out
    assert "lit-robust fit: trained 2 epoch(s)" in out
    assert "Test it:          lit-robust test --config " in out
    last_validation = out[out.index("Last validation") :]  # the numbers the run ended on
    assert "clean accuracy (validation split)" in last_validation
    assert re.search(r"worst case over all attacks +\d+\.\d\d%", last_validation)


def test_validate_and_predict_run():
    debug = [CONFIGS / "trainer" / "debug.yaml", CONFIGS / "eval" / "smoke.yaml"]
    validated = LitRobustCLI(args=["validate", *config_args(*BASE, *debug)])
    assert {"val/acc", "val/robust_acc/pgd_linf_0.1", "val/worst_case_acc"} <= set(
        validated.trainer.callback_metrics
    )
    predicted = LitRobustCLI(args=["predict", *config_args(*BASE, *debug)])
    batches = predicted.trainer.predict_loop.predictions
    assert len(batches) == 2 and all(b.dtype == torch.long and b.max() < 10 for b in batches)


# ------------------------------------------------------- the data's facts reach the network
CIFAR_SHAPED = ["--data.init_args.input_shape=[3, 32, 32]", "--data.init_args.num_classes=3"]


def test_the_data_reaches_the_network_and_the_saved_hyperparameters():
    cli = LitRobustCLI(args=[*config_args(*BASE), *CIFAR_SHAPED], run=False)
    given = cli.config.model.init_args.network.init_args
    assert (given.in_channels, given.input_size, given.num_classes) == (3, 32, 3)
    assert (given.mean, given.std) == ([0.5], [0.3])  # SyntheticDataModule's statistics
    network = cli.model.network
    assert network.features[0].in_channels == 3 and network.classifier[-1].out_features == 3
    assert network.normalize.std.flatten().tolist() == pytest.approx([0.3])
    saved = cli.model.hparams["network"]["init_args"]  # what load_from_checkpoint rebuilds from
    assert (saved["in_channels"], saved["input_size"], saved["mean"]) == (3, 32, [0.5])


@pytest.mark.parametrize("data", sorted((CONFIGS / "data").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_data_config_reaches_the_default_network(data):
    cli = LitRobustCLI(args=config_args(data, CONFIGS / "model" / "standard.yaml"), run=False)
    datamodule, network = cli.datamodule, cli.model.network
    assert network.input_spec.accepts((2, *datamodule.input_shape))
    assert network.normalize.mean.flatten().tolist() == pytest.approx(list(datamodule.mean))
    assert network.normalize.std.flatten().tolist() == pytest.approx(list(datamodule.std))
    assert network.classifier[-1].out_features == datamodule.num_classes


def test_unset_network_arguments_print_as_null(capsys):
    with pytest.raises(SystemExit):
        main(["fit", *config_args(*BASE), "--print_config"])
    printed = capsys.readouterr().out
    assert "in_channels: null" in printed and "input_size: null" in printed  # null: from the data


@pytest.mark.parametrize(
    ("args", "mean", "std", "channels"),
    [
        ([], [0.5], [0.5], 3),  # gfa.yaml's [-1, 1] inputs win over the data's statistics
        (["--model.init_args.network.init_args.std=[0.25]"], [0.5], [0.25], 3),  # the command line wins
        (
            ["--config", str(CONFIGS / "network" / "resnet20.yaml")],
            [0.5],
            [0.5],
            3,
        ),  # they follow the network
        (["--model.init_args.network.init_args.in_channels=1"], [0.5], [0.5], 1),  # even a wrong value
    ],
)
def test_written_network_arguments_win_over_the_data(args, mean, std, channels):
    cli = LitRobustCLI(
        args=[*config_args(BASE[0], CONFIGS / "model" / "gfa.yaml"), *CIFAR_SHAPED, *args], run=False
    )
    network = cli.model.network
    assert network.normalize.mean.flatten().tolist() == pytest.approx(mean)
    assert network.normalize.std.flatten().tolist() == pytest.approx(std)
    assert network.input_spec.channels == channels


def test_a_cifar_shaped_run_restores_from_its_checkpoint_and_its_config():
    debug = [CONFIGS / "trainer" / "debug.yaml"]
    main(["fit", *config_args(*BASE, *debug), *CIFAR_SHAPED, "--robustness.attacks=[]"])
    run = Path("runs/debug/version_0")
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["network"]["init_args"]
    assert (saved["in_channels"], saved["input_size"], saved["num_classes"]) == (3, 32, 3)
    restored = StandardTraining.load_from_checkpoint(run / "checkpoints" / "last.ckpt")  # no arguments
    assert restored.network.features[0].in_channels == 3
    assert restored(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    again = LitRobustCLI(args=["validate", "--config", str(run / "config.yaml")])  # the run's own config
    assert again.model.network.features[0].in_channels == 3 and "val/acc" in again.trainer.callback_metrics


def test_fill_network_arguments_fills_only_what_is_unset():
    network = Namespace(
        class_path="lit_robust.models.LeNet",
        init_args=Namespace(in_channels=None, input_size=None, mean=[0.1], std=None),
    )
    other = Namespace(  # not a network slot: left alone
        class_path="lit_robust.models.SmallCNN", init_args=Namespace(input_size=None, std=None)
    )
    data = Namespace(
        class_path="lit_robust.data.SyntheticDataModule",
        init_args=Namespace(input_shape=[2, 20, 20], num_classes=4),
    )
    config = Namespace(model=Namespace(init_args=Namespace(network=network, backbone=other)), data=data)
    filled = fill_network_arguments(config)
    assert filled == {"network.in_channels": 2, "network.input_size": 20, "network.std": [0.3]}
    assert network.init_args.mean == [0.1]  # written: kept
    assert other.init_args.input_size is None and other.init_args.std is None
    # nothing unset: the data is not even built (this class path does not exist)
    config.data = Namespace(class_path="no.such.DataModule", init_args=Namespace())
    assert fill_network_arguments(config) == {}


def test_data_facts():
    facts = data_facts(SyntheticDataModule(num_classes=3, input_shape=(3, 16, 24)))
    assert facts == {
        "num_classes": 3,
        "mean": [0.5],
        "std": [0.3],
        "in_channels": 3,
        "input_shape": [3, 16, 24],
    }
    assert data_facts(object()) == {}  # input_size is only for square images (above), nothing without facts


def test_tensorboard_opens_on_the_hyperparameters_against_robust_accuracy():
    """No ``hp_metric = -1`` placeholder; the HPARAMS tab lists what tells runs apart and compares them
    on val/worst_case_acc; a custom-scalars layout puts every accuracy of a run on one chart."""

    debug = [CONFIGS / "trainer" / "debug.yaml", CONFIGS / "eval" / "smoke.yaml"]
    main(
        ["fit", *config_args(CONFIGS / "data" / "synthetic.yaml", CONFIGS / "model" / "trades.yaml", *debug)]
    )
    (events,) = Path("runs").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert "hp_metric" not in accumulator.Tags()["scalars"]
    assert "custom_scalars__config__" in accumulator.Tags()["tensors"]
    content = accumulator.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    names = {info.name for info in experiment.hparam_infos}
    assert {"defense", "network", "adversary", "adversary_eps", "beta"} <= names
    assert not any(name.startswith("_") for name in names)
    assert [info.name.tag for info in experiment.metric_infos][0] == "val/worst_case_acc"


def test_a_cli_mistake_ends_in_a_short_error_with_a_suggestion(capsys):
    """No usage dump, no echo of the value: the error, a suggestion for a mistyped class, the hint."""
    base = config_args(*BASE)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *base, "--model.init_args.network.class_path=lit_robust.models.SmallCN"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "did you mean lit_robust.models.SmallCNN?" in err and "tip: lit-robust fit --help" in err
    assert "usage:" not in err and "Given value" not in err and len(err.splitlines()) < 15
    with pytest.raises(SystemExit):
        main(["fit", *base, "--model.init_args.lam=3"])
    assert "Option 'lam' is not accepted" in capsys.readouterr().err
