"""The report's attack settings and eps curves (the rest is exercised end to end in test_cli.py)."""

from __future__ import annotations

import json

from lit_robust.attacks import PGD, Transfer
from lit_robust.report import attack_settings, eps_curves, progress_text
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
