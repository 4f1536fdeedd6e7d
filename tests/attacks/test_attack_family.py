"""Invariants every attack in ``lit_robust.attacks.__all__`` must keep (DESIGN.md, section 3)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import lit_robust.attacks as attacks_module
from lit_robust.attacks import FGSM, PGD, Attack, ThreatModel, Transfer
from tests.attacks.cases import ATTACKS
from tests.conftest import tiny_cnn


def concrete_attack_classes() -> set[type]:
    exported = (getattr(attacks_module, name) for name in attacks_module.__all__)
    return {c for c in exported if inspect.isclass(c) and issubclass(c, Attack) and not inspect.isabstract(c)}


def test_every_exported_attack_is_covered():
    assert concrete_attack_classes() <= {type(attack) for attack in ATTACKS}


def within_ball(x_adv: torch.Tensor, x: torch.Tensor, attack: Attack) -> bool:
    """The pixel-space bound; flow attacks test their displacement bound in their own files."""
    delta = (x_adv - x).flatten(1)
    if attack.threat_model in (ThreatModel.UNBOUNDED, ThreatModel.FLOW):
        return True
    if attack.threat_model is ThreatModel.LINF:
        return bool(delta.abs().max() <= attack.eps + 1e-6)
    order = {ThreatModel.L2: 2, ThreatModel.L1: 1}[attack.threat_model]
    return bool((delta.norm(p=order, dim=1) <= attack.eps * (1 + 1e-5)).all())


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_output_in_unit_box_and_ball_and_input_untouched(attack, trained_tiny):
    model, x, y = trained_tiny
    x_before = x.clone()
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert within_ball(x_adv, x, attack)
    assert torch.equal(x, x_before)
    assert not torch.equal(x_adv, x)  # it did perturb


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack_increases_its_objective(attack, trained_tiny):
    if isinstance(attack, Transfer):
        pytest.skip("a transfer attack ascends the source's loss, not the target's")
    model, x, y = trained_tiny
    x_adv = attack(model, x, y)
    with torch.no_grad():
        if getattr(attack, "loss", "ce") == "kl":
            clean = F.softmax(model(x), dim=1)
            gain = F.kl_div(F.log_softmax(model(x_adv), dim=1), clean, reduction="batchmean")
            assert gain > 1e-4
        else:
            assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_modes_batchnorm_and_parameters_untouched(attack, trained_tiny):
    _, x, y = trained_tiny
    model = tiny_cnn()
    model.train()
    model[2].eval()  # a frozen BatchNorm: must stay in eval mode, the rest in train mode
    model[1].weight.requires_grad_(False)  # a frozen layer must stay frozen
    modes = {name: m.training for name, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    attack(model, x, y)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False] + [True] * 5


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_works_under_inference_mode(attack, trained_tiny):
    model, x, y = trained_tiny
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
        x_adv = attack(model, x_inf, y_inf)
    assert not x_adv.is_inference()
    assert within_ball(x_adv, x, attack) and not torch.equal(x_adv, x)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_eps_zero_returns_the_input(attack, trained_tiny):
    if attack.eps is None or "eps" not in inspect.signature(type(attack)).parameters:
        pytest.skip("no budget of its own")
    model, x, y = trained_tiny
    zero = type(attack)(**{**vars_for(attack), "eps": 0.0})
    assert torch.equal(zero(model, x, y), x)


def vars_for(attack: Attack) -> dict:
    """Constructor arguments of ``attack`` read back from its attributes."""
    parameters = inspect.signature(type(attack).__init__).parameters
    return {name: getattr(attack, name) for name in parameters if name not in ("self", "name")}


@pytest.mark.parametrize("make", [lambda e: FGSM(e), lambda e: PGD(e), lambda e: FGSM(e, random_start=True)])
@pytest.mark.parametrize("eps", [-0.1, 8, 1.5, float("nan")])
def test_bad_linf_eps_is_a_clear_error(make, eps):
    with pytest.raises(ValueError, match="eps"):
        make(eps)


def test_bad_l2_eps_and_other_arguments():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        PGD(-1.0, norm="l2")
    with pytest.raises(ValueError, match="norm"):
        PGD(0.1, norm="l3")
    with pytest.raises(ValueError, match="steps"):
        PGD(0.1, steps=0)
    with pytest.raises(ValueError, match="random_start"):
        PGD(0.1, random_start="gaussian")
    with pytest.raises(ValueError, match="loss"):
        PGD(0.1, loss="dlr")
    with pytest.raises(ValueError, match="step_size"):
        FGSM(0.1, step_size=-1.0)
    assert PGD(2.0, norm="l2").eps == 2.0  # L2 budgets may exceed 1


def test_minimal_perturbation_attacks_take_no_budget():
    class Minimal(Attack):
        threat_model = ThreatModel.UNBOUNDED
        short_name = "minimal_l2"

        def perturb(self, model, x, y):
            return x

    assert Minimal().name == "minimal_l2" and Minimal().eps is None
    with pytest.raises(ValueError, match="takes no eps"):
        Minimal(eps=0.1)
    with pytest.raises(ValueError, match="eps is required"):
        PGD(None)
