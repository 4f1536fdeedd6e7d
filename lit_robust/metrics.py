"""Metric names: the one place the callbacks log under and the report and the CLI summary read.

Every evaluation metric is ``<stage>/<name>`` or, per attack, ``<stage>/<name>/<attack name>``,
with ``stage`` ``val`` or ``test`` (``../shared/papers/evaluation.md`` has the full list)::

    val/acc                         clean accuracy of the whole split (the LightningModule)
    val/subset_acc                  clean accuracy of the attacked subset
    val/robust_acc/pgd_linf_0.3     accuracy under one attack (clean mistakes count as not robust)
    val/worst_case_acc              per-sample worst case over every attack of the callback
    val/worst_case_acc_at/linf_0.1  the same over the callback's attacks of one budget, when its
                                    attacks span several (an eps sweep, or Linf and L2 together)
    val/attack_seconds/pgd_linf_0.3 wall-clock seconds one attack of a RobustnessEvaluation ran,
                                    summed over batches and processes
    val/median_l2/deepfool_l2       a minimal-perturbation statistic of one attack
    val/masking/<check>             a gradient-masking check, with ``<check>_flag`` and ``flags``

Training metrics (``train/loss``, ``train/ce``, ``train/<name>_reg``) are the defenses' (see
:class:`~lit_robust.defenses.base.RobustClassifier`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")

ACC = "acc"
SUBSET_ACC = "subset_acc"
ROBUST_ACC = "robust_acc"
WORST_CASE_ACC = "worst_case_acc"
WORST_CASE_ACC_AT = "worst_case_acc_at"
ATTACK_SECONDS = "attack_seconds"
MASKING = "masking"
MINIMAL_STATISTICS = ("median_l2", "median_linf", "mean_l2", "success_rate", "rho2")


def metric(stage: str, name: str, attack: str | None = None) -> str:
    """``<stage>/<name>``, or ``<stage>/<name>/<attack>`` for a per-attack metric."""
    return f"{stage}/{name}" if attack is None else f"{stage}/{name}/{attack}"


def budget_name(threat_model: str, eps: float) -> str:
    """``linf_0.3``: a budget's name in ``worst_case_acc_at/<budget>`` (threat model value, eps)."""
    return f"{threat_model}_{eps:g}"


def per_attack(metrics: Mapping[str, V], stage: str, name: str) -> dict[str, V]:
    """``{suffix: value}`` for every key ``<stage>/<name>/<suffix>`` of ``metrics``, in order: the
    attack names of a per-attack metric (for ``masking``, the check names)."""
    prefix = f"{stage}/{name}/"
    return {key.removeprefix(prefix): value for key, value in metrics.items() if key.startswith(prefix)}
