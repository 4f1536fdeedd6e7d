"""Every exported defense refuses a bad value (NaN, inf, -inf, negative, zero, a string) of each numeric
constructor argument where it is given (``tests/bad_values.py``); ``ALLOWS`` is the specification of the
values that mean something."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest

import lit_robust.defenses as defenses_module
from lit_robust.attacks import PGD
from lit_robust.defenses import (
    GFA,
    TRADES,
    WNLL,
    AdversarialTraining,
    DeepDefense,
    FlowGradientRegularization,
    InputGradientRegularization,
    LocalFlatnessRegularization,
    RobustClassifier,
    StandardTraining,
)
from tests.bad_values import cases, check_refused, unknown_allowances
from tests.helpers import NUM_CLASSES, tiny_cnn

# the arguments each defense needs besides its network; nothing here is under test
REQUIRED: dict[type, dict[str, Any]] = {
    StandardTraining: {},
    AdversarialTraining: {"attack": PGD(0.1, steps=2)},
    TRADES: {"attack": PGD(0.1, steps=2, loss="kl", random_start="normal")},
    GFA: {},
    InputGradientRegularization: {},
    FlowGradientRegularization: {},
    LocalFlatnessRegularization: {"steps": 2},
    DeepDefense: {},
    WNLL: {"feature_dim": NUM_CLASSES, "k": 3, "k_sigma": 2, "num_templates": 16, "stage_b_templates": 8},
}

# value kind -> {"Class.parameter" or "*.parameter": why that value is meaningful}
ALLOWS: dict[str, dict[str, str]] = {
    "zero": {
        "*.lam": "lam = 0 is the unregularized baseline (standard training / vanilla fine-tuning)",
        "TRADES.beta": "beta = 0 keeps only the clean cross-entropy, the natural end of the trade-off",
        "*.rs_sigma_px": "no random-start deformation (the documented 'off')",
        "GFA.input_center": "c_in = 0 aligns the input gradient with the raw pixels (documented option)",
        "GFA.min_grad_norm": "0 turns the tiny-gradient guard off (the default)",
        "LocalFlatnessRegularization.eps": "a ball of radius 0: the gradient norm at the clean point",
        "LocalFlatnessRegularization.steps": "K = 0: no ascent, the penalty at the random start",
        "LocalFlatnessRegularization.init_std": "start the ascent at x itself, no noise",
        "LocalFlatnessRegularization.lam_warmup_epochs": "no warm-up (the default)",
        "DeepDefense.overshoot": "eta = 0 is exact DeepFool (spec (h) 1-2)",
        "DeepDefense.norm_eps": "no guard inside the gradient norms: exact DeepFool steps",
        "WNLL.stage_a_epochs": "train stage B only (not both stages 0)",
        "WNLL.stage_b_epochs": "train the softmax stage only (not both stages 0)",
        "WNLL.ridge": "0 solves the WNLL system exactly",
        "WNLL.template_seed": "0 is a seed like any other (the default)",
    },
}


def build(cls: type, **kwargs: Any) -> RobustClassifier:
    return cls(**{"network": tiny_cnn(), "num_classes": NUM_CLASSES, **REQUIRED[cls], **kwargs})


def test_every_exported_defense_is_covered():
    exported = (getattr(defenses_module, name) for name in defenses_module.__all__)
    defenses = {c for c in exported if inspect.isclass(c) and issubclass(c, RobustClassifier)}
    assert defenses - {RobustClassifier} == set(REQUIRED)


def test_every_allowance_names_a_numeric_parameter_of_a_covered_defense():
    assert not unknown_allowances(REQUIRED, ALLOWS)


@pytest.mark.parametrize(("cls", "parameter", "kind"), cases(REQUIRED))
def test_bad_values_are_refused_where_they_are_given(cls, parameter, kind):
    check_refused(build, cls, parameter, kind, ALLOWS)


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (GFA, {"layer_weights": {"input": math.nan}}, "layer_weights"),
        (GFA, {"layer_weights": {"input": -1.0}}, "layer_weights"),
        (GFA, {"penalty": math.nan}, "penalty"),
        (WNLL, {"mu": math.nan}, "mu"),
        (WNLL, {"mu": math.inf}, "mu"),
        (WNLL, {"mu": "median"}, "mu"),
        (WNLL, {"val_template_chunks": 11}, "val_template_chunks"),  # more than the 10 template_chunks
        (DeepDefense, {"rho_space": "zca"}, "rho_space"),
        (LocalFlatnessRegularization, {"p": "2", "eps": math.inf}, "eps"),
        (LocalFlatnessRegularization, {"q": True}, "q"),
    ],
)
def test_bad_values_of_other_arguments_are_refused(cls, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        build(cls, **kwargs)
