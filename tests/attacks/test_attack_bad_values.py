"""Every attack constructor refuses a bad value where it is given (the shared harness of tests/bad_values.py).

``ALLOWS`` is the specification of the parameters that legitimately take zero; no attack parameter
takes ``inf`` or a negative value.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
from torch import Tensor, nn

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
    Square,
    StAdv,
    ThreatModel,
    Transfer,
    WithGradMode,
)
from tests.bad_values import cases, check_refused, unknown_allowances


class _LinfAttack(Attack):
    """The base class's own eps check, on the strictest threat model."""

    threat_model = ThreatModel.LINF
    short_name = "linf"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return x


def _with(cls: type, **fixed: Any) -> Callable[..., Any]:
    """Build ``cls`` from ``fixed`` arguments, overridden by the bad value under test."""
    return lambda **kwargs: cls(**{**fixed, **kwargs})


def _pgd(**kwargs: Any) -> PGD:
    """PGD; ``l1_sparsity`` only applies to norm ``"l1"``, so it is tested there."""
    return PGD(**{"eps": 0.1, **({"norm": "l1"} if "l1_sparsity" in kwargs else {}), **kwargs})


INNER = PGD(0.1, steps=1)
BUILDERS: dict[type, Callable[..., Any]] = {
    Attack: _with(_LinfAttack, eps=0.1),
    APGDCE: _with(APGDCE, eps=0.1),
    APGDDLR: _with(APGDDLR, eps=0.1),
    APGDT: _with(APGDT, eps=0.1),
    BIM: _with(BIM, eps=0.1),
    CWL2: _with(CWL2),
    DDN: _with(DDN),
    EAD: _with(EAD),
    FAB: _with(FAB),
    FABT: _with(FABT, eps=0.1),
    FGSM: _with(FGSM, eps=0.1),
    MIFGSM: _with(MIFGSM, eps=0.1),
    PGD: _pgd,
    ADef: _with(ADef),
    AutoAttack: _with(AutoAttack, eps=0.1),
    DeepFool: _with(DeepFool),
    FlowPGD: _with(FlowPGD, eps=0.01),
    Square: _with(Square, eps=0.1),
    StAdv: _with(StAdv),
    Transfer: _with(Transfer, attack=INNER, source=nn.Flatten()),  # no numeric parameter of its own
    WithGradMode: _with(WithGradMode, attack=INNER, grad_mode="exact"),
}

ALLOWS: dict[str, set[str]] = {
    "zero": {
        "*.eps",  # a budget of 0 is legal: Attack.__call__ returns the clean input (eps curves start there)
        "*.seed",  # 0 is a seed like any other (AutoAttack's default)
        "*.kappa",  # CW, EAD, stAdv: a zero confidence margin is each paper's default
        "ADef.max_norm",  # ADef's eps: 0 returns the clean input, as every budget
        "ADef.sigma",  # no Gaussian smoothing of the vector field (documented; foolbox allows it)
        "DeepFool.overshoot",  # eta = 0: plain DeepFool, no overshoot
        "EAD.beta",  # no L1 term: EAD's FISTA version of CW-L2 (Chen et al., section 3)
        "FAB.alpha_max",  # no bias of the step toward the clean point; FAB's range is [0, 1]
        "MIFGSM.decay",  # mu = 0: BIM on L1-normalized gradients (Dong et al.)
        "PGD.l1_sparsity",  # SLIDE with every coordinate updated: plain L1 steepest ascent
    },
}


def _build(cls: type, **kwargs: Any) -> Any:
    return BUILDERS[cls](**kwargs)


def exported_attack_classes() -> set[type]:
    exported = (getattr(attacks_module, name) for name in attacks_module.__all__)
    return {c for c in exported if inspect.isclass(c) and issubclass(c, Attack)}


def test_every_exported_attack_has_a_builder():
    assert exported_attack_classes() <= set(BUILDERS)


def test_every_builder_builds_with_its_defaults():
    for cls, build in BUILDERS.items():
        assert isinstance(build(), Attack), cls


def test_allows_name_real_parameters():
    assert not unknown_allowances(BUILDERS, ALLOWS)


@pytest.mark.parametrize(("cls", "parameter", "kind"), list(cases(BUILDERS)))
def test_bad_value_is_refused_naming_the_parameter(cls, parameter, kind):
    check_refused(_build, cls, parameter, kind, ALLOWS)


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: PGD(0.1, step_size=math.nan), "step_size"),  # used to return all-NaN images
        (lambda: MIFGSM(0.1, decay=math.nan), "decay"),  # used to report 100% robust accuracy
        (lambda: DeepFool(overshoot=math.nan), "overshoot"),  # used to never succeed
        (lambda: StAdv(kappa="abc"), "kappa"),  # used to be accepted
        (lambda: FGSM(math.nan), "eps"),
        (lambda: DDN(gamma=math.nan), "gamma"),
        (lambda: FAB(alpha_max=math.nan), "alpha_max"),
        (lambda: Square(0.1, p_init=math.nan), "p_init"),
        (lambda: ADef(overshoot=math.nan), "overshoot"),
    ],
)
def test_audited_values_are_refused(make, parameter):
    with pytest.raises((ValueError, TypeError), match=rf"\b{parameter}\b"):
        make()


def test_linf_eps_message_keeps_its_advice():
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\] for PGD .*write 8/255 as 0\.0313725"):
        PGD(8)
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\] for FGSM"):
        FGSM(-0.1)
    with pytest.raises(ValueError, match=r"eps must be >= 0"):
        PGD(-1.0, norm="l2")
    assert PGD(8.0, norm="l2").eps == 8.0  # L2 budgets may exceed 1


def test_adef_overshoot_message_keeps_its_advice():
    with pytest.raises(ValueError, match=r"overshoot must be >= 1 \(a factor, not DeepFool's eta"):
        ADef(overshoot=0.02)


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda **kw: PGD(0.1, **kw), "norm"),
        (lambda **kw: PGD(0.1, **kw), "random_start"),
        (lambda **kw: PGD(0.1, **kw), "loss"),
        (lambda **kw: MIFGSM(0.1, **kw), "norm"),
        (lambda **kw: FAB(**kw), "norm"),
        (lambda **kw: EAD(**kw), "decision_rule"),
        (lambda **kw: DeepFool(**kw), "norm"),
        (lambda **kw: ADef(**kw), "smoothing_padding"),
        (lambda **kw: FlowPGD(0.01, **kw), "units"),
        (lambda **kw: FlowPGD(0.01, **kw), "padding_mode"),
        (lambda **kw: APGDCE(0.1, **kw), "norm"),
        (lambda **kw: FABT(0.1, **kw), "norm"),
        (lambda **kw: Square(0.1, **kw), "norm"),
        (lambda **kw: AutoAttack(0.1, **kw), "norm"),
        (lambda **kw: AutoAttack(0.1, **kw), "version"),
        (lambda **kw: WithGradMode(INNER, **kw), "grad_mode"),
    ],
)
@pytest.mark.parametrize("value", ["abc", None, ["l2"], math.nan])
def test_bad_choice_is_refused_naming_the_parameter(make, parameter, value):
    with pytest.raises(ValueError, match=rf"{parameter} must be one of .*; got"):
        make(**{parameter: value})


def test_wrappers_refuse_what_is_not_an_attack():
    with pytest.raises(TypeError, match="attack must be a lit_robust Attack"):
        Transfer("pgd", source=nn.Flatten())
    with pytest.raises(TypeError, match="attack must be a lit_robust Attack"):
        WithGradMode("pgd", grad_mode="exact")


def test_integers_are_not_truncated_floats():
    """``steps: 1e3`` in a YAML file is a float: refused rather than silently truncated."""
    with pytest.raises(TypeError, match="steps must be an integer"):
        PGD(0.1, steps=1e3)
    with pytest.raises(TypeError, match="seed must be an integer"):
        AutoAttack(0.1, seed=True)
    assert APGDCE(0.1, seed=2**64 - 1).seed == 2**64 - 1  # torch.manual_seed's largest seed
    with pytest.raises(ValueError, match="seed must be in"):
        APGDCE(0.1, seed=2**64)
