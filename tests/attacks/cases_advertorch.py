"""Cheap instances of the advertorch-backed attacks, run by the family tests (collected in cases.py)."""

from __future__ import annotations

from lit_robust.attacks.base import Attack
from lit_robust.attacks.bim import BIM
from lit_robust.attacks.cw import CWL2
from lit_robust.attacks.ddn import DDN
from lit_robust.attacks.ead import EAD
from lit_robust.attacks.fab import FAB
from lit_robust.attacks.mifgsm import MIFGSM
from lit_robust.attacks.pgd import PGD
from lit_robust.attacks.stadv import StAdv

CASES: list[Attack] = [
    PGD(2.0, norm="l1", steps=3),
    BIM(0.1, steps=3, step_size=0.03),
    MIFGSM(0.1, steps=3),
    MIFGSM(1.0, norm="l2", steps=3),
    CWL2(steps=10, lr=0.1),
    CWL2(c=10.0, steps=5, lr=0.05, binary_search_steps=2),
    EAD(c=1.0, binary_search_steps=2, steps=10),
    EAD(decision_rule="L1", c=1.0, binary_search_steps=2, steps=10),
    DDN(steps=10),
    FAB(norm="linf", steps=5),
    FAB(norm="l2", steps=5),
    StAdv(steps=10),
]
