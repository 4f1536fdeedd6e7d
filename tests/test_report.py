"""The report's attack settings and eps curves (the rest is exercised end to end in test_cli.py)."""

from __future__ import annotations

import json

from lit_robust.attacks import PGD, Transfer
from lit_robust.defenses import AdversarialTraining
from lit_robust.models import SmallCNN
from lit_robust.report import (
    architecture_digest,
    attack_settings,
    eps_curves,
    progress_text,
    render_markdown,
    training_settings,
    training_text,
    weights_scored,
    worst_case_rows,
)
from tests.helpers import tiny_cnn


def test_wrapped_attacks_report_their_threat_model_as_plain_text():
    settings = attack_settings(Transfer(PGD(0.1, steps=2), source=tiny_cnn(), source_name="softmax"))
    assert settings["threat_model"] == "linf" and settings["short_name"] == "transfer_softmax"
    assert settings["attack"]["short_name"] == "pgd"
    json.dumps(settings)  # plain values only


def test_eps_curves_keep_attack_families_apart():
    plain = [attack_settings(PGD(eps, steps=2)) for eps in (0.1, 0.2)]
    wrapped = [attack_settings(Transfer(PGD(eps, steps=2), source=tiny_cnn())) for eps in (0.1, 0.2)]
    values = (0.8, 0.5, 0.9, 0.7)
    metrics = {f"test/robust_acc/{s['name']}": v for s, v in zip(plain + wrapped, values, strict=True)}
    curves = eps_curves([{"attacks": plain + wrapped}], metrics)
    assert curves == {"pgd_linf": [[0.1, 0.8], [0.2, 0.5]], "transfer_source_linf": [[0.1, 0.9], [0.2, 0.7]]}


def test_the_report_says_how_far_the_scored_checkpoint_was_trained():
    unfinished = progress_text({"epochs_completed": 3, "max_epochs": 10, "global_step": 30})
    assert unfinished == " (written after epoch 3 of 10: training had not finished)"
    assert progress_text({"epochs_completed": 10, "max_epochs": 10}).endswith("training finished)")
    assert progress_text(None) == ""


def test_the_report_shows_training_time_attack_cost_and_named_evaluations():
    progress = {"epochs_completed": 20, "max_epochs": 20, "global_step": 580, "train_seconds": 126.0}
    expected = " (written after epoch 20 of 20: training finished; 2.1 min of training steps)"
    assert progress_text(progress) == expected
    report = {
        "model": "StandardTraining", "network": "SmallCNN", "checkpoint": "last.ckpt",
        "checkpoint_progress": progress, "created": "now", "seed": 0,
        "run": {"command": "test", "completed": True, "status": "finished"},
        "hardware": {"device": "cpu", "processes": 1}, "clean_acc": 0.99, "subset_clean_acc": 0.99,
        "robust_acc": {"autoattack_linf_0.3": 0.5}, "attack_seconds": {"autoattack_linf_0.3": 1290.0},
        "worst_case_acc": 0.5,
        "named_worst_case_acc": {"budgets": 0.25}, "eps_curves": {}, "minimal_perturbation": {},
        "masking": {}, "versions": {},
        "evaluations": [{"callback": "RobustnessEvaluation", "name": "budgets", "num_samples": 200, "seed": 0,
                         "attacks": []}],
    }  # fmt: skip
    page = render_markdown(report)
    assert "| **worst case over the main evaluation's attacks** | **50.00%** |" in page
    assert "| worst case over the attacks of evaluation `budgets` | 25.00% |" in page
    assert "- RobustnessEvaluation `budgets`: 200 samples, seed 0" in page
    assert "| `autoattack_linf_0.3` | 21.5 |" in page  # minutes the attack ran
    del report["attack_seconds"]  # a report written before attacks were timed
    assert "What each attack cost" not in render_markdown(report)


def test_the_report_names_the_weights_and_how_the_model_was_trained():
    model = AdversarialTraining(network=tiny_cnn(), attack=PGD(0.3, steps=2), num_classes=4, init_from="w.pt")
    training = training_settings(model)
    assert training["defense"] == "AdversarialTraining" and training["adversary"]["name"] == "pgd_linf_0.3"
    assert training_text(training).startswith("AdversarialTraining, adversary `pgd_linf_0.3`")
    assert weights_scored(model, None) == "w.pt (init_from)" and weights_scored(model, "a.ckpt") == "a.ckpt"
    json.dumps(training)  # plain values only
    assert training["hyperparameters"]["init_from"] == "w.pt"  # trained from it: a training setting
    model.hparams["_class_path"] = "lit_robust.defenses.AdversarialTraining"  # LightningCLI's bookkeeping
    model.init_from_scored = True  # what a test stage sets when it loads init_from to score it
    assert not {"init_from", "_class_path"} & set(training_settings(model)["hyperparameters"])


def test_a_report_of_several_budgets_keeps_a_worst_case_per_budget():
    worst = {
        "worst_case_acc": 0.5,
        "named_worst_case_acc": {"budgets": 0.3},
        "worst_case_acc_by_budget": {
            "linf_0.1": 0.8,
            "linf_0.3": 0.5,
            "budgets/l2_2": 0.3,
            "budgets/linf_0.1": 0.6,
        },
    }
    assert worst_case_rows(worst) == [
        ("worst case over the main evaluation's attacks (2 budgets mixed; each below)", 0.5),
        ("worst case at `linf_0.1`", 0.8),
        ("worst case at `linf_0.3`", 0.5),
        ("worst case over the attacks of evaluation `budgets` (2 budgets mixed; each below)", 0.3),
        ("worst case of evaluation `budgets` at `l2_2`", 0.3),
        ("worst case of evaluation `budgets` at `linf_0.1`", 0.6),
    ]
    assert worst_case_rows({"worst_case_acc": 0.5}) == [("worst case over all attacks", 0.5)]


def test_the_architecture_digest_tells_networks_apart_but_not_their_weights():
    digest = architecture_digest(SmallCNN(num_classes=10, in_channels=1, input_size=28))
    assert len(digest) == 12 and int(digest, 16) >= 0
    again = SmallCNN(num_classes=10, in_channels=1, input_size=28, zero_init_head=False)  # other weights
    assert architecture_digest(again) == digest
    bias_free = SmallCNN(num_classes=10, in_channels=1, input_size=28, bias=False)  # one class, no biases
    assert architecture_digest(bias_free) != digest
    normalized = SmallCNN(num_classes=10, in_channels=1, input_size=28, mean=[0.5], std=[0.5])
    assert architecture_digest(normalized) != digest  # the input normalization is part of the network
