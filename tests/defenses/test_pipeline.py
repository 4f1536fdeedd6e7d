"""The one training step every defense shares: any regularizer on any objective (RobustClassifier)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_robust.attacks import FGSM, PGD
from lit_robust.cli import main
from lit_robust.defenses import (
    GFA,
    AdversarialTraining,
    DeepDefense,
    FlowGradientRegularization,
    InputGradientRegularization,
    LocalFlatnessRegularization,
    StandardTraining,
)
from tests.helpers import (
    CONFIGS,
    NUM_CLASSES,
    assert_every_parameter_has_a_gradient,
    config_args,
    logged_scalars,
    tiny_cnn,
    tiny_data,
)

REGULARIZERS = {  # each defense with a cheap setting, and the name of the term it adds to the loss
    GFA: ({"lam": 1.0}, "gfa_reg"),
    InputGradientRegularization: ({"lam": 1.0}, "input_grad_reg"),
    FlowGradientRegularization: ({"lam": 1.0}, "flow_grad_reg"),
    LocalFlatnessRegularization: ({"eps": 0.1, "alpha": 0.05, "steps": 1}, "lfr_reg"),
    DeepDefense: ({"df_steps_train": 1}, "deep_defense_reg"),
}
OBJECTIVES = {
    "adversarial training": ({"adversary": PGD(0.1, steps=1)}, {"adv_ce"}),
    "TRADES": (
        {"adversary": PGD(0.1, steps=1, loss="kl", random_start="normal"), "trades_beta": 2.0},
        {"ce", "kl"},
    ),
}


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(tiny_data().train_dataloader()))


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("cls", list(REGULARIZERS), ids=lambda c: c.__name__)
def test_every_regularizer_composes_with_every_objective(cls, objective):
    settings, reg = REGULARIZERS[cls]
    arguments, task_terms = OBJECTIVES[objective]
    model = cls(network=tiny_cnn(), num_classes=NUM_CLASSES, **settings, **arguments)
    model.train()
    terms = model.compute_loss(*batch())
    assert task_terms | {reg} <= set(terms) and torch.isfinite(terms["loss"])
    beta = arguments.get("trades_beta")
    task = terms["adv_ce"] if beta is None else terms["ce"] + beta * terms["kl"]
    torch.testing.assert_close(terms["loss"], task + terms[reg])
    terms["loss"].backward()
    assert_every_parameter_has_a_gradient(model)


def test_a_regularizer_at_weight_zero_with_an_adversary_is_adversarial_training_bit_for_bit():
    x, y = batch()
    losses, gradients = [], []
    for model in (
        AdversarialTraining(tiny_cnn(), attack=PGD(0.1, steps=2), num_classes=NUM_CLASSES),
        InputGradientRegularization(
            tiny_cnn(), lam=0.0, adversary=PGD(0.1, steps=2), num_classes=NUM_CLASSES
        ),
    ):
        model.train()
        torch.manual_seed(0)
        loss = model.compute_loss(x, y)["loss"]
        loss.backward()
        losses.append(loss.detach())
        gradients.append([p.grad for p in model.parameters()])
    assert torch.equal(*losses)
    for first, second in zip(*gradients, strict=True):
        assert torch.equal(first, second)


def test_the_regularizer_sees_the_inputs_the_task_loss_is_taken_at():
    x, y = batch()
    network = tiny_cnn().eval()  # no dropout, no BatchNorm updates: the same function every call
    seen = {}

    class Spy(StandardTraining):
        def regularizer(self, x, y, logits):
            seen["x"], seen["logits"] = x, logits
            return {}

    attack = PGD(0.2, steps=2, random_start="none")
    Spy(network, adversary=attack, num_classes=NUM_CLASSES).eval().compute_loss(x, y)
    torch.testing.assert_close(seen["x"], attack(network, x, y))  # adversarial training: x'
    Spy(
        network, adversary=PGD(0.2, steps=2, loss="kl"), trades_beta=1.0, num_classes=NUM_CLASSES
    ).compute_loss(x, y)
    torch.testing.assert_close(seen["x"], x)  # TRADES: the clean inputs, where its CE is
    torch.testing.assert_close(seen["logits"], network(x))


def test_trades_needs_an_adversary_that_maximizes_the_kl():
    with pytest.raises(ValueError, match="maximizes the KL"):
        StandardTraining(tiny_cnn(), adversary=FGSM(0.1), trades_beta=1.0)
    with pytest.raises(ValueError, match="maximizes the KL"):
        StandardTraining(tiny_cnn(), trades_beta=1.0)
    with pytest.raises(TypeError, match="adversary must be a lit_robust Attack"):
        StandardTraining(tiny_cnn(), adversary="pgd")


def test_diagnostics_are_logged_but_not_added_to_the_loss():
    x, y = batch()
    model = InputGradientRegularization(tiny_cnn(), lam=3.0, num_classes=NUM_CLASSES)
    terms = model.compute_loss(x, y)
    torch.testing.assert_close(terms["input_grad_reg"].detach(), 3.0 * terms["input_grad_penalty"])
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["input_grad_reg"])
    assert not terms["input_grad_penalty"].requires_grad


COMBINATIONS = {  # the shipped regularizer + adversarial training configs, and their regularizer's term
    "mnist_gfa_pgd_at_smallcnn": "gfa_reg",
    "mnist_input_gradient_pgd_at_smallcnn": "input_grad_reg",
    "mnist_local_flatness_pgd_at_smallcnn": "lfr_reg",
    "mnist_flow_gradient_adversarial_deformation_smallcnn": "flow_grad_reg",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_each_regularizer_plus_adversarial_training_config_trains_on_the_sample(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = CONFIGS / "experiments" / f"{name}.yaml"
    args = config_args(experiment, "data/mnist_sample", "trainer/debug", "eval/smoke")
    overrides = ["--model.init_args.adversary.init_args.steps=1", "--trainer.enable_progress_bar=false"]
    if "local_flatness" in name:
        overrides.append("--model.init_args.steps=1")
    main(["fit", *args, *overrides, "--robustness.num_samples=16", "--test_after_fit=false"])
    logged = logged_scalars(Path("runs/debug/version_0"))
    assert {"train/adv_ce", f"train/{COMBINATIONS[name]}", "val/worst_case_acc"} <= set(logged)
    assert all(torch.isfinite(torch.tensor(logged["train/loss"])))


@pytest.mark.slow
def test_wnll_on_pgd_adversarial_training_trains_on_the_sample(tmp_path, monkeypatch):
    """The WNLL paper's robust setting: stage A is PGD-AT of the softmax network (the adversary group)."""
    monkeypatch.chdir(tmp_path)
    experiment = CONFIGS / "experiments" / "mnist_sample_wnll_smallcnn.yaml"
    args = config_args(experiment, "adversary/pgd_at_mnist", "trainer/debug", "eval/smoke")
    overrides = ["--model.init_args.adversary.init_args.steps=1", "--trainer.enable_progress_bar=false"]
    main(["fit", *args, *overrides, "--robustness.num_samples=16", "--test_after_fit=false"])
    logged = logged_scalars(Path("runs/debug/version_0"))
    assert {"train/adv_ce", "val/worst_case_acc"} <= set(logged)
