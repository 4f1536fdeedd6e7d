"""Cheap instances of the attacks we write ourselves (no library has them), for the family tests."""

from __future__ import annotations

from lit_robust.attacks.adef import ADef
from lit_robust.attacks.deepfool import DeepFool
from lit_robust.attacks.flow_pgd import FlowPGD

CASES = [
    DeepFool("l2", max_iter=10),
    DeepFool("linf", max_iter=10, num_candidates=2),
    FlowPGD(0.1, steps=3),
    FlowPGD(0.5, steps=3, units="pixels", padding_mode="border"),
    ADef(max_iter=10),
    ADef(max_norm=1.5, max_iter=10, overshoot=1.2),
]
