"""Every numeric argument of every callback is refused where it is given (``tests/bad_values.py``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from lit_robust import callbacks
from lit_robust.attacks import FGSM, PGD, DeepFool
from lit_robust.callbacks import (
    AdversarialExamples,
    FGSEpsRef,
    GradientFeatureAlignment,
    GradientMaskingChecks,
    LocalFlatness,
    MinimalPerturbation,
    RobustnessEvaluation,
    SubsetEvaluation,
)
from tests.bad_values import cases, check_refused, unknown_allowances

# Each class with the arguments it requires (the bad value is added to these).
REQUIRED: dict[type, Callable[[], dict[str, Any]]] = {
    AdversarialExamples: lambda: {"attack": FGSM(0.1)},
    FGSEpsRef: dict,
    GradientFeatureAlignment: dict,
    GradientMaskingChecks: lambda: {"white_box": PGD(0.1, steps=1)},
    LocalFlatness: dict,
    MinimalPerturbation: lambda: {"attacks": [DeepFool()]},
    RobustnessEvaluation: dict,
}

# The specification: the parameters that legitimately take one of the values refused elsewhere.
ALLOWS: dict[str, dict[str, str]] = {
    "zero": {
        "*.seed": "0 is an ordinary seed (the default)",
        "GradientMaskingChecks.tolerance": "0 is the strictest threshold: a single point flags the check",
        "GradientMaskingChecks.max_final_sweep_acc": "0: the largest sweep eps must break every point",
        "GradientMaskingChecks.max_loss_gap": "0 is the strictest threshold: any gap flags the check",
        "GradientFeatureAlignment.input_center": "0 centres h_in at black: alignment with the raw pixels",
        "GradientFeatureAlignment.eps_cos": "0 is the exact cosine (NaN for a zero gradient), as in GFA",
        "LocalFlatness.eps": "LF_0 is the clean gradient norm, as in LocalFlatnessRegularization",
        "LocalFlatness.init_std": "0 starts the ascent at x itself",
        "MinimalPerturbation.rho2_overshoot": "DeepFool without overshoot: the linearized boundary",
    },
}


def build(cls: type, **kwargs: Any) -> Any:
    return cls(**REQUIRED[cls](), **kwargs)


def test_every_callback_is_covered():
    exported = {getattr(callbacks, name) for name in callbacks.__all__}
    assert set(REQUIRED) == {obj for obj in exported if isinstance(obj, type)} - {SubsetEvaluation}


def test_every_allowance_names_a_real_numeric_parameter():
    assert not unknown_allowances(REQUIRED, ALLOWS)


@pytest.mark.parametrize(("cls", "parameter", "kind"), list(cases(REQUIRED)))
def test_bad_value_is_refused(cls: type, parameter: str, kind: str):
    check_refused(build, cls, parameter, kind, ALLOWS)


@pytest.mark.parametrize("cls", [GradientMaskingChecks, FGSEpsRef])
def test_nan_tolerance_is_refused(cls: type):
    """A NaN tolerance passed every ``x > tolerance`` check unnoticed: a check that could not fail,
    or (FGSEpsRef) a search that stopped before its first probe and reported ``eps_max / 2``."""
    with pytest.raises(ValueError, match="tolerance must be a number, got nan"):
        build(cls, tolerance=math.nan)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (FGSEpsRef, {"tolerance": 1.0}, r"tolerance must be in \(0, 1\)"),  # no probe would ever run
        (FGSEpsRef, {"eps_max": 0.1, "tolerance": 0.2}, r"tolerance must be in \(0, 0.1\)"),
        (FGSEpsRef, {"fractions": [0.5, math.nan]}, "fractions must be a number"),
        (FGSEpsRef, {"fractions": [0.5, math.inf]}, "fractions must be finite"),
        (FGSEpsRef, {"fractions": [0.0]}, r"fractions must be > 0"),
        (FGSEpsRef, {"eps_ref": 0.5, "fractions": [3.0]}, "leave the Linf range"),
        (GradientMaskingChecks, {"tolerance": 1.0}, r"tolerance must be in \[0, 1\)"),
        (GradientMaskingChecks, {"eps_sweep": [DeepFool()]}, "eps_sweep must be attacks with an eps"),
        (MinimalPerturbation, {"rho2_steps": [0]}, "rho2_steps must be >= 1"),
        (MinimalPerturbation, {"rho2_steps": [5.0]}, "rho2_steps must be an integer"),
        (LocalFlatness, {"p": "2", "eps": math.inf}, "eps must be finite"),
        (LocalFlatness, {"p": "1"}, r"p \(the ball\) must be one of"),
        (GradientFeatureAlignment, {"task_loss": "l1"}, "task_loss must be one of"),
        (GradientFeatureAlignment, {"input_center": 1.5}, r"input_center must be in \[0, 1\]"),
    ],
)
def test_values_outside_the_documented_range_are_refused(cls: type, kwargs: dict[str, Any], match: str):
    with pytest.raises((ValueError, TypeError), match=match):
        build(cls, **kwargs)


def test_the_ranges_admit_what_they_document():
    assert LocalFlatness(p="2", eps=3.0).eps == 3.0  # an L2 ball may be wider than one pixel's range
    assert FGSEpsRef(eps_ref=0.5, fractions=[0.2, 2.0]).fractions == [0.2, 2.0]
    assert MinimalPerturbation(rho2_steps=[50, 5], rho2_num_candidates=None).rho2_steps == [50, 5]
    assert AdversarialExamples(FGSM(0.1), seed=2**64 - 1).seed == 2**64 - 1
