"""Attacks: ``attack(model, x, y) -> x_adv``, images in [0, 1], budgets in pixel units."""

from lit_robust.attacks.base import Attack, GradientMaskingWarning, ThreatModel, eps_tag
from lit_robust.attacks.fgsm import FGSM
from lit_robust.attacks.pgd import PGD
from lit_robust.attacks.transfer import Transfer

__all__ = ["FGSM", "PGD", "Attack", "GradientMaskingWarning", "ThreatModel", "Transfer", "eps_tag"]
