"""Callbacks that evaluate robustness during and after training."""

from lit_robust.callbacks.robustness_evaluation import RobustnessEvaluation, robust_flags, seeded_subset

__all__ = ["RobustnessEvaluation", "robust_flags", "seeded_subset"]
