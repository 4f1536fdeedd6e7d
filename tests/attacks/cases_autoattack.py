"""Cheap settings of the pyautoattack-backed attacks for the family tests (tests/attacks/cases.py).

Budgets fit the tiny CNN of tests/helpers.py (4 classes, 12x12 images): large enough that every
attack fools some points (APGD, FAB-T and Square return clean inputs where they fail).
"""

from __future__ import annotations

from lit_robust.attacks.apgd import APGDCE, APGDDLR, APGDT
from lit_robust.attacks.autoattack import AutoAttack
from lit_robust.attacks.base import Attack
from lit_robust.attacks.fab_t import FABT
from lit_robust.attacks.square import Square

CASES: list[Attack] = [
    APGDCE(0.1, steps=5),
    APGDCE(1.0, norm="l2", steps=5),
    APGDCE(5.0, norm="l1", steps=5),
    APGDDLR(0.1, steps=5),
    APGDT(0.1, steps=5),  # 9 target classes, capped at 3 on 4 classes
    FABT(0.1, steps=5),
    FABT(1.0, norm="l2", steps=5),
    Square(0.2, n_queries=50),
    AutoAttack(0.1, apgd_steps=5, fab_steps=5, n_queries=50),
    AutoAttack(1.0, norm="l2", version="custom", attacks=["apgd_dlr", "fab_t"], apgd_steps=5, fab_steps=5),
]
