"""Attacks: ``attack(model, x, y) -> x_adv``, images in [0, 1], budgets in pixel units."""

from lit_robust.attacks.adef import ADef
from lit_robust.attacks.apgd import APGDCE, APGDDLR, APGDT
from lit_robust.attacks.autoattack import AutoAttack
from lit_robust.attacks.base import Attack, GradientMaskingWarning, Objective, ThreatModel, eps_tag
from lit_robust.attacks.bim import BIM
from lit_robust.attacks.cw import CWL2
from lit_robust.attacks.ddn import DDN
from lit_robust.attacks.deepfool import DeepFool
from lit_robust.attacks.ead import EAD
from lit_robust.attacks.fab import FAB
from lit_robust.attacks.fab_t import FABT
from lit_robust.attacks.fgsm import FGSM
from lit_robust.attacks.flow_pgd import FlowPGD
from lit_robust.attacks.grad_mode import WithGradMode
from lit_robust.attacks.mifgsm import MIFGSM
from lit_robust.attacks.pgd import PGD
from lit_robust.attacks.square import Square
from lit_robust.attacks.stadv import StAdv
from lit_robust.attacks.transfer import Transfer

__all__ = [
    "APGDCE",
    "APGDDLR",
    "APGDT",
    "BIM",
    "CWL2",
    "DDN",
    "EAD",
    "FAB",
    "FABT",
    "FGSM",
    "MIFGSM",
    "PGD",
    "ADef",
    "Attack",
    "AutoAttack",
    "DeepFool",
    "FlowPGD",
    "GradientMaskingWarning",
    "Objective",
    "Square",
    "StAdv",
    "ThreatModel",
    "Transfer",
    "WithGradMode",
    "eps_tag",
]
