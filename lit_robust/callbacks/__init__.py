"""Callbacks that evaluate robustness during and after training."""

from lit_robust.callbacks.adversarial_examples import AdversarialExamples
from lit_robust.callbacks.fgs_eps_ref import FGSEpsRef
from lit_robust.callbacks.gradient_feature_alignment import GradientFeatureAlignment
from lit_robust.callbacks.gradient_masking import GradientMaskingChecks
from lit_robust.callbacks.local_flatness import LocalFlatness
from lit_robust.callbacks.minimal_perturbation import MinimalPerturbation
from lit_robust.callbacks.robustness_evaluation import RobustnessEvaluation, robust_flags
from lit_robust.callbacks.subset_evaluation import SubsetEvaluation, seeded_subset

__all__ = [
    "AdversarialExamples",
    "FGSEpsRef",
    "GradientFeatureAlignment",
    "GradientMaskingChecks",
    "LocalFlatness",
    "MinimalPerturbation",
    "RobustnessEvaluation",
    "SubsetEvaluation",
    "robust_flags",
    "seeded_subset",
]
