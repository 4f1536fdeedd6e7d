"""Invariants every attack in ``lit_robust.attacks.__all__`` must keep (DESIGN.md, section 3)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lit_robust.attacks as attacks_module
from lit_robust.attacks import (
    APGDCE,
    APGDDLR,
    APGDT,
    BIM,
    CWL2,
    DDN,
    EAD,
    FAB,
    FABT,
    FGSM,
    MIFGSM,
    PGD,
    ADef,
    Attack,
    AutoAttack,
    DeepFool,
    FlowPGD,
    Objective,
    Square,
    StAdv,
    ThreatModel,
    Transfer,
    WithGradMode,
)
from tests.attacks.cases import ATTACKS, GradientViews, target_for
from tests.helpers import tiny_cnn


def concrete_attack_classes() -> set[type]:
    exported = (getattr(attacks_module, name) for name in attacks_module.__all__)
    return {c for c in exported if inspect.isclass(c) and issubclass(c, Attack) and not inspect.isabstract(c)}


def test_every_exported_attack_is_covered():
    assert concrete_attack_classes() <= {type(attack) for attack in ATTACKS}
    assert WithGradMode in concrete_attack_classes()


# What each attack maximizes (lit_robust.attacks.base.Objective documents the values). PGD's depends on
# its loss, a wrapper's is its inner attack's.
OBJECTIVES: dict[type, str] = {
    FGSM: "ce",
    BIM: "ce",
    MIFGSM: "ce",
    APGDCE: "ce",
    FlowPGD: "ce",
    APGDDLR: "dlr",
    APGDT: "dlr_targeted",
    Square: "margin",
    CWL2: "minimal",
    EAD: "minimal",
    DDN: "minimal",
    DeepFool: "minimal",
    FAB: "minimal",
    FABT: "minimal",
    ADef: "minimal",
    StAdv: "minimal",
    AutoAttack: "ensemble",
}
WRAPPERS = (Transfer, WithGradMode)


def expected_objective(attack: Attack) -> str:
    if isinstance(attack, WRAPPERS):
        return expected_objective(attack.attack)
    if isinstance(attack, PGD):
        return attack.loss
    return OBJECTIVES[type(attack)]


def test_every_exported_attack_states_a_documented_objective():
    assert concrete_attack_classes() <= {*OBJECTIVES, PGD, *WRAPPERS}
    documented = {"ce", "kl", "dlr", "dlr_targeted", "margin", "minimal", "ensemble"}
    assert {member.value for member in Objective} == documented
    for attack in ATTACKS:
        assert isinstance(attack.objective, Objective), attack.name
        assert attack.objective == expected_objective(attack), attack.name


def test_objective_threat_model_and_short_name_are_per_instance():
    kl, ce, l2 = PGD(0.1, loss="kl"), PGD(0.1), PGD(0.5, norm="l2")
    assert (kl.objective, kl.short_name, kl.name) == (Objective.KL, "pgd_kl", "pgd_kl_linf_0.1")
    assert (ce.objective, ce.short_name, ce.name) == (Objective.CE, "pgd", "pgd_linf_0.1")
    assert (l2.threat_model, l2.name) == (ThreatModel.L2, "pgd_l2_0.5")
    assert FGSM(0.1).objective == "ce" and FGSM(0.1, random_start=True).short_name == "fgsm_rs"
    assert FGSM(0.1).short_name == "fgsm"  # another instance's short name did not leak into the class
    assert Transfer(FGSM(0.1), source=tiny_cnn(), source_name="src").objective is Objective.CE
    wrapped = WithGradMode(PGD(0.5, norm="l2", loss="kl"), "softmax")
    assert (wrapped.objective, wrapped.threat_model) == (Objective.KL, ThreatModel.L2)
    assert (wrapped.short_name, wrapped.name) == ("pgd_kl_transfer", "pgd_kl_l2_0.5_transfer")
    aa = AutoAttack(0.1, norm="l2", version="plus", apgd_steps=5)
    assert (aa.short_name, aa.threat_model) == ("autoattack_plus_custom", ThreatModel.L2)
    assert aa.objective is Objective.ENSEMBLE


class _Stated(Attack):
    def perturb(self, model, x, y):
        return x


def test_the_constructor_states_what_the_class_does_not():
    attack = _Stated(0.2, threat_model="l2", short_name="custom", objective="margin")
    assert (attack.threat_model, attack.objective) == (ThreatModel.L2, Objective.MARGIN)
    assert attack.name == "custom_l2_0.2"
    assert _Stated(0.2, threat_model=ThreatModel.LINF, short_name="custom").objective is None  # not stated
    with pytest.raises(TypeError, match="does not state its threat_model"):
        _Stated(0.1, short_name="custom")
    with pytest.raises(TypeError, match="does not state its short_name"):
        _Stated(0.1, threat_model="linf")
    with pytest.raises(ValueError, match="objective must be one of .*'kl'.*got 'trades'"):
        _Stated(0.1, threat_model="linf", short_name="custom", objective="trades")
    with pytest.raises(ValueError, match="threat_model must be one of"):
        _Stated(0.1, threat_model="l3", short_name="custom")
    with pytest.raises(ValueError, match="short_name must be a non-empty string"):
        _Stated(0.1, threat_model="linf", short_name="")


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
    x_adv = attack(target_for(attack, model), x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert within_ball(x_adv, x, attack)
    assert torch.equal(x, x_before)
    assert not torch.equal(x_adv, x)  # it did perturb


class TwoFaced(GradientViews):
    """Predicts with ``predictor``; every gradient view is ``network``."""

    def __init__(self, network: nn.Module, predictor: nn.Module):
        super().__init__(network)
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(x)


def test_with_grad_mode_crafts_on_the_requested_view(trained_tiny):
    model, x, y = trained_tiny
    inner = PGD(0.1, steps=3, random_start="none")
    target = TwoFaced(model, tiny_cnn(seed=5).eval())
    x_adv = WithGradMode(inner, "softmax")(target, x, y)
    assert target.requested == ["softmax"]
    torch.testing.assert_close(x_adv, inner(model, x, y))
    assert not torch.equal(x_adv, inner(target.predictor, x, y))
    with pytest.raises(TypeError, match="gradient_view"):
        WithGradMode(inner, "exact")(model, x, y)


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{i != y} z_i - z_y`` per sample: positive where the label is not the top class."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    return logits.scatter(1, y[:, None], float("-inf")).amax(dim=1) - true


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """APGD-DLR's loss ``-(z_y - max_{i != y} z_i) / (z_(1) - z_(3))`` per sample (Croce & Hein, eq. 5)."""
    ordered = logits.sort(dim=1, descending=True).values
    return logit_margin(logits, y) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack_increases_its_objective(attack, trained_tiny):
    """Each attack does what its ``objective`` says, judged on the attacked model."""
    if isinstance(attack, Transfer):
        pytest.skip("a transfer attack ascends the source's loss, not the target's")
    model, x, y = trained_tiny
    x_adv = attack(target_for(attack, model), x, y)
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
    if attack.objective is Objective.KL:
        gain = F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        assert gain > 1e-4
        return
    assert F.cross_entropy(adv, y) > F.cross_entropy(clean, y)  # every labelled objective raises it
    if attack.objective is Objective.DLR:
        assert dlr_loss(adv, y).mean() > dlr_loss(clean, y).mean()
    elif attack.objective in (Objective.DLR_TARGETED, Objective.MARGIN):
        assert logit_margin(adv, y).mean() > logit_margin(clean, y).mean()
    elif attack.objective in (Objective.MINIMAL, Objective.ENSEMBLE):
        moved = (x_adv != x).flatten(1).any(dim=1)  # these return the clean input where they fail
        assert moved.any() and (adv.argmax(dim=1)[moved] != y[moved]).all()
    else:
        assert attack.objective is Objective.CE


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_modes_batchnorm_and_parameters_untouched(attack, trained_tiny):
    _, x, y = trained_tiny
    model = tiny_cnn()
    model.train()
    model[2].eval()  # a frozen BatchNorm: must stay in eval mode, the rest in train mode
    model[1].weight.requires_grad_(False)  # a frozen layer must stay frozen
    modes = {name: m.training for name, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    attack(target_for(attack, model), x, y)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False] + [True] * 5


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_works_under_inference_mode(attack, trained_tiny):
    model, x, y = trained_tiny
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
        x_adv = attack(target_for(attack, model), x_inf, y_inf)
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
